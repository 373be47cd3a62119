"""GPU check: the project's own backend and training-step code on CUDA, with models of the
embedded models' exact architectures (random weights, fixed seed), against references measured
in the same run.

Run it on a GPU machine (needs only torch + transformers + numpy and this repository's code; it
never imports ray, deepspeed, trl or vllm from the project's code, and checks that). The weights
are built from the configs embedded below, so only the two tokenizers travel. Pack just their
files on a machine that ran `w2s setup` (raw: SmolLM2 tokenizer.json 3,522,871 B, Gemma 3
tokenizer.json 33,371,397 B, configs/template < 1 kB; packed: 6,242,680 B):

    mkdir -p runs && tar -C ~/.cache/w2s/models -czf runs/gpu_tok.tar.gz \
        smollm2-135m-instruct/tokenizer.json smollm2-135m-instruct/tokenizer_config.json \
        smollm2-135m-instruct/chat_template.jinja gemma3-270m/tokenizer.json gemma3-270m/tokenizer_config.json

then, in the repository root on the GPU machine (`runs/` is git-ignored, so a device `run` call
names it: carry=["runs/gpu_tok.tar.gz"]; timeout_s=480 leaves room, the check itself should take
1-3 minutes, most of it imports and the CPU fp32 references):

    python3 benchmarks/gpu_check.py --tokenizers runs/gpu_tok.tar.gz --out $OUT/gpu_check.md

CPU smoke run (2 layers per model, short sequences; ~80 s of CPU time on 2 cores):

    .venv/bin/python benchmarks/gpu_check.py --device cpu --small

--tokenizers takes a directory holding <name>/tokenizer.json ... or a .tar.gz / .tar of one
(default: the embedded cache, $W2S_CACHE/models or ~/.cache/w2s/models).

What it measures, per model (SmolLM2-135M: LlamaConfig; Gemma-3-270M: Gemma3TextConfig):
  (a) option scoring through actors.hf_backend.HFBackend (built by its own __init__, with the
      in-memory model handed to it in place of actors.registry.load_model): score_options (label
      token, one forward) and score_texts (length-normalised answer-text log-likelihood), bf16 on
      the device vs fp32 on the CPU of the same weights; pass: max |p_bf16 - p_fp32| <= --tol;
  (b) greedy generation (HFBackend.generate), generated tokens/s (info: how many greedy texts equal
      the fp32 reference's; random weights make near-ties, so bf16 may pick another token);
  (c) --steps optimizer steps of training.sft_trainer.fit_local (train_loop: collate,
      option_scores, compute_loss = cross-entropy of the label token over the vocabulary, fused
      AdamW, bf16 autocast, grad clipping) on --micro-batch rows of ~--train-len tokens, the same
      rows every step; pass: last loss < 0.8 x first;
  (d) peak GPU memory of training (torch.cuda.max_memory_allocated; on CPU: the process's peak
      RSS), training tokens/s over the steps after --warmup and MFU: model FLOPs (6 x non-embedding
      params + 12 x layers x seq x heads x head_dim per token, + 6 x hidden x vocab per row for the
      answer-position logits; benchmarks/train_throughput.py's convention) / s / the bf16 matmul
      peak measured in this run (a timed 8192^3 bf16 matmul on CUDA, 2048^3 on CPU);
  (e) the device name, capability, versions, CPU model and its bf16 features.
Prints a Markdown table (and writes it to --out); exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import importlib.abc
import os
import platform
import resource
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FORBIDDEN = ("ray", "deepspeed", "trl", "vllm")  # not in the GPU machine's image

# The embedded models' config.json, verbatim (~/.cache/w2s/models/<name>/config.json).
SMOLLM2_135M_CONFIG = {
    "_model_name_or_path": "Smollm2 135M 8k Lc100K Mix1 Ep2", "architectures": ["LlamaForCausalLM"],
    "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 1, "dtype": "float32", "eos_token_id": 2,
    "head_dim": 64, "hidden_act": "silu", "hidden_size": 576, "initializer_range": 0.02, "intermediate_size": 1536,
    "max_position_embeddings": 8192, "mlp_bias": False, "model_type": "llama", "num_attention_heads": 9,
    "num_hidden_layers": 30, "num_key_value_heads": 3, "pad_token_id": 2, "pretraining_tp": 1,
    "rms_norm_eps": 9.999999747378752e-06, "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"},
    "tie_word_embeddings": True, "transformers_version": "5.23.0", "unk_token_id": 0, "use_cache": True,
    "vocab_size": 49152,
}
_S, _F = "sliding_attention", "full_attention"
GEMMA3_270M_CONFIG = {
    "_model_name_or_path": "Gemma 3 270m", "_sliding_window_pattern": 6, "architectures": ["Gemma3ForCausalLM"],
    "attention_bias": False, "attention_dropout": 0.0, "attn_logit_softcapping": None, "bos_token_id": 2,
    "dtype": "float32", "eos_token_id": 1, "final_logit_softcapping": None, "head_dim": 256,
    "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 640, "initializer_range": 0.02,
    "intermediate_size": 2048, "layer_types": [_S] * 5 + [_F] + [_S] * 5 + [_F] + [_S] * 5 + [_F],
    "max_position_embeddings": 32768, "model_type": "gemma3_text", "num_attention_heads": 4,
    "num_hidden_layers": 18, "num_key_value_heads": 1, "pad_token_id": 0, "query_pre_attn_scalar": 256,
    "rms_norm_eps": 9.999999974752427e-07,
    "rope_parameters": {"full_attention": {"rope_theta": 1000000.0, "rope_type": "default"},
                        "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"}},
    "sliding_window": 512, "tie_word_embeddings": True, "transformers_version": "5.23.0", "unk_token_id": 3,
    "use_bidirectional_attention": False, "use_cache": True, "vocab_size": 262144,
}
# check name -> (tokenizer dir name under --tokenizers, config, display name)
MODELS = {
    "smollm2-135m": ("smollm2-135m-instruct", SMOLLM2_135M_CONFIG, "SmolLM2-135M (llama)"),
    "gemma3-270m": ("gemma3-270m", GEMMA3_270M_CONFIG, "Gemma-3-270M (gemma3_text)"),
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")

# (question, four options, index of the right one): rendered by actors.prompts.render
QUESTIONS = [
    ("Where would you keep milk cold?", ["refrigerator", "oven", "mailbox", "bookshelf"], 0),
    ("What do bees make?", ["steel", "honey", "glass", "paper"], 1),
    ("Which animal barks?", ["cat", "fish", "dog", "snake"], 2),
    ("What falls from clouds when it rains?", ["sand", "leaves", "smoke", "water"], 3),
    ("What do you use to cut paper?", ["scissors", "spoon", "pillow", "bucket"], 0),
    ("Where do people usually sleep?", ["garage", "bed", "sink", "roof"], 1),
    ("What is frozen water called?", ["steam", "mud", "ice", "salt"], 2),
    ("Which of these is a fruit?", ["carrot", "potato", "onion", "apple"], 3),
    ("What do you wear on your feet?", ["shoes", "hats", "gloves", "scarves"], 0),
    ("What gives light during the day?", ["moon", "sun", "lamp", "candle"], 1),
    ("Which tool drives nails?", ["saw", "ruler", "hammer", "brush"], 2),
    ("What do cows drink?", ["oil", "juice", "coffee", "water"], 3),
    ("Where do fish live?", ["water", "desert", "attic", "cloud"], 0),
    ("What do you read?", ["chair", "book", "plate", "sock"], 1),
    ("Which season is the coldest?", ["summer", "spring", "winter", "autumn"], 2),
    ("What do you open with a key?", ["tree", "river", "song", "lock"], 3),
]
FILLER = ("Background: the village market opens at dawn, and traders bring bread, cheese, apples and cloth from "
          "the farms along the river. Children carry baskets while the old clock in the square rings every hour. ")


class ImportWatch(importlib.abc.MetaPathFinder):
    """Records every import of a FORBIDDEN package made from this repository's code (third-party
    libraries probing optional packages, e.g. transformers' deepspeed check, are not the project's
    doing: on the GPU image they find nothing and go on). Finds nothing itself."""

    def __init__(self):
        self.hits: list[str] = []

    def find_spec(self, name, path=None, target=None):
        if path is None and name in FORBIDDEN:
            f = sys._getframe(1)
            while f is not None and (f.f_code.co_filename.startswith("<") or "importlib" in f.f_code.co_filename):
                f = f.f_back
            fn = Path(f.f_code.co_filename).resolve() if f is not None else None
            if fn is not None and fn.is_relative_to(ROOT) and not any(
                    part in (".venv", "site-packages") for part in fn.relative_to(ROOT).parts):
                self.hits.append(f"{name} ({fn.relative_to(ROOT)}:{f.f_lineno})")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    ap.add_argument("--small", action="store_true", help="2 layers per model (CPU smoke run); default: full configs")
    ap.add_argument("--tokenizers", default=None, help="directory or .tar(.gz) with <name>/tokenizer.json ...")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps (default 12 on CUDA, 6 on CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps (default 2 on CUDA, 1 on CPU)")
    ap.add_argument("--micro-batch", type=int, default=None, help="rows per step (default 16 on CUDA, 4 on CPU)")
    ap.add_argument("--train-len", type=int, default=None, help="tokens per training row (default 512 / 64)")
    ap.add_argument("--gen-prompts", type=int, default=None, help="greedy prompts (default 8 / 4)")
    ap.add_argument("--gen-tokens", type=int, default=None, help="new tokens per prompt (default 64 / 16)")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--tol", type=float, default=0.02, help="max |p_bf16 - p_fp32| of option probabilities")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the table (Markdown) here")
    return ap.parse_args(argv)


def default_tokenizer_dir() -> Path:
    return Path(os.environ.get("W2S_CACHE", "~/.cache/w2s")).expanduser() / "models"


@contextlib.contextmanager
def tokenizer_root(arg: str | None):
    """The directory holding <name>/tokenizer.json: --tokenizers itself, or a tar of it unpacked."""
    path = Path(arg).expanduser() if arg else default_tokenizer_dir()
    if path.is_dir():
        yield path
        return
    if not path.is_file() or not tarfile.is_tarfile(path):
        raise SystemExit(f"--tokenizers: {path} is neither a directory nor a tar file")
    d = tempfile.mkdtemp(prefix="w2s-gpu-check-tok-")
    try:
        with tarfile.open(path) as tf:
            try:
                tf.extractall(d, filter="data")
            except TypeError:  # Python without extraction filters (< 3.10.12 / 3.11.4)
                tf.extractall(d)  # our own archive of tokenizer files
        yield Path(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def load_tok(root: Path, name: str):
    from transformers import AutoTokenizer

    d = root / name
    if not (d / "tokenizer.json").is_file():
        raise SystemExit(f"--tokenizers: no {d}/tokenizer.json (pack {', '.join(TOKENIZER_FILES)} per model)")
    tok = AutoTokenizer.from_pretrained(str(d))
    if tok.pad_token is None:  # as actors.registry does
        tok.pad_token = tok.eos_token or tok.unk_token
    sizes = {f: (d / f).stat().st_size for f in TOKENIZER_FILES if (d / f).is_file()}
    return tok, sizes


def model_config(cfg_dict: dict, small: bool):
    from transformers import Gemma3TextConfig, LlamaConfig

    d = copy.deepcopy(cfg_dict)
    if small:  # keep every shape, fewer layers (Gemma: one sliding and one full-attention layer)
        d["num_hidden_layers"] = 2
        if "layer_types" in d:
            d["layer_types"] = [_S, _F]
    cls = {"llama": LlamaConfig, "gemma3_text": Gemma3TextConfig}[d["model_type"]]
    return cls.from_dict(d)


def build_model(cfg, device: str, seed: int):
    """Random weights from the config, initialised on the device with a fixed seed; kept in fp32 on
    the CPU (every copy below is made from it, so all paths see the same weights)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    return model.to("cpu").eval()


def sync(device: str):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: str) -> float:
    """bf16 matmul TFLOP/s: best of 3 timed runs of `reps` products (8192^3 on CUDA, 2048^3 on CPU)."""
    import torch

    n, reps = (8192, 20) if device == "cuda" else (2048, 10)
    a = torch.randn(n, n, dtype=torch.bfloat16, device=device)
    b = torch.randn(n, n, dtype=torch.bfloat16, device=device)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(3):
        sync(device)
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t))
    del a, b
    return best / 1e12


def make_backend(model, tok, device: str, dtype: str, spec: str):
    """actors.hf_backend.HFBackend through its own __init__, with `model` (a copy, cast to the
    backend's dtype and put on `device`) in place of actors.registry.load_model's."""
    from actors import hf_backend
    from actors.backend import BackendConfig

    def load(spec_, head, dtype=None, device=None):
        return copy.deepcopy(model).to(device=target, dtype=dtype), tok

    target = device
    cfg = BackendConfig(dtype=dtype, threads=os.cpu_count() or 1)
    with mock.patch.object(hf_backend, "load_model", load):
        b = hf_backend.HFBackend(spec, cfg)
    b.device = target  # HFBackend picks cuda when present; the fp32 reference runs on the CPU
    return b


def rows():
    from actors.prompts import TemplateConfig, render

    label, text = TemplateConfig(), TemplateConfig(answer="text")
    out = []
    for q, opts, ans in QUESTIONS:
        t, labels = render(q, opts, range(len(opts)), label)
        _, answers = render(q, opts, range(len(opts)), text)
        out.append({"text": t, "labels": labels, "answers": answers, "target": ans})
    return out


def scoring(dev_b, ref_b, data, tol: float, device: str) -> dict:
    import numpy as np

    texts, labels, answers = [r["text"] for r in data], [r["labels"] for r in data], [r["answers"] for r in data]
    dev_b.score_options(texts[:2], labels[:2])  # warm-up (CUDA kernels, allocator)
    sync(device)
    t = time.perf_counter()
    p_dev = dev_b.score_options(texts, labels)
    sync(device)
    secs = time.perf_counter() - t
    p_ref = ref_b.score_options(texts, labels)
    s_dev, s_ref = dev_b.score_texts(texts, answers), ref_b.score_texts(texts, answers)
    d_opt = max(float(np.abs(a - b).max()) for a, b in zip(p_dev, p_ref))
    d_txt = max(float(np.abs(a - b).max()) for a, b in zip(s_dev, s_ref))
    agree = sum(int(a.argmax() == b.argmax()) for a, b in zip(p_dev, p_ref))
    return {"d_opt": d_opt, "d_txt": d_txt, "agree": agree, "n": len(texts), "rows_s": len(texts) / secs,
            "top_p": float(np.mean([p.max() for p in p_ref])), "ok": d_opt <= tol and d_txt <= tol}


def generation(dev_b, ref_b, prompts: list[str], new_tokens: int, device: str) -> dict:
    from actors.backend import encode_prompts

    prompt_tokens = sum(len(s) for s in encode_prompts(dev_b.tok, prompts, False, dev_b.cfg.max_length - new_tokens))
    dev_b.generate(prompts[:1], max_new_tokens=4)  # warm-up
    before = dev_b.tokens_seen
    sync(device)
    t = time.perf_counter()
    out = dev_b.generate(prompts, max_new_tokens=new_tokens, temperature=0.0)
    sync(device)
    secs = time.perf_counter() - t
    generated = dev_b.tokens_seen - before - prompt_tokens  # tokens_seen: prompt + generated tokens
    ref = ref_b.generate(prompts, max_new_tokens=new_tokens, temperature=0.0)
    same = sum(int(a[0][0] == b[0][0]) for a, b in zip(out, ref))
    return {"tok_s": generated / secs, "generated": generated, "secs": secs, "same": same, "n": len(prompts)}


def train_examples(tok, data, n: int, train_len: int) -> list[dict]:
    """n rows of ~train_len tokens: filler context + a question; the target is the right option."""
    ids = tok(FILLER * (train_len // 20 + 2), add_special_tokens=False)["input_ids"]
    out = []
    for i in range(n):
        r = data[i % len(data)]
        q_len = len(tok(r["text"], add_special_tokens=False)["input_ids"])
        ctx = tok.decode(ids[i % 7: i % 7 + max(0, train_len - q_len - 1)])
        out.append({"id": f"row{i}", "text": ctx + "\n" + r["text"], "labels": r["labels"], "target": r["target"],
                    "weight": 1.0})
    return out


def training(model, tok, cfg, data, args, device: str, peak_tflops: float, work: Path) -> dict:
    """training.sft_trainer.fit_local (the project's train_loop) on a copy of `model`."""
    import torch

    import actors.registry
    from training.sft_config import TrainConfig
    from training.sft_trainer import TrainJob, fit_local, read_history

    examples = train_examples(tok, data, args.micro_batch, args.train_len)
    t = TrainConfig(engine="torch", precision="bf16", lr=args.lr, lr_schedule="constant", max_steps=args.steps,
                    micro_batch=args.micro_batch, max_length=args.train_len + 64, checkpoint_at_end=False,
                    seed=args.seed)
    job = TrainJob(name="gpu_check", spec="gpu-check", out_dir=str(work), train=t, examples=examples,
                   num_options=4)

    def load(spec, head="causal_lm", num_labels=None, dtype=None, device="cpu"):
        return copy.deepcopy(model).to(device=device, dtype=dtype or torch.float32), tok

    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base_mem = torch.cuda.memory_allocated()
    with mock.patch.object(actors.registry, "load_model", load):
        fit_local(job, log=lambda s: None)
    hist = read_history(job.out_dir)
    w = min(args.warmup, len(hist) - 1)
    secs = hist[-1]["seconds"] - hist[w - 1]["seconds"] if w else hist[-1]["seconds"]
    tokens = sum(h["tokens"] for h in hist[w:])
    timed_rows = (len(hist) - w) * args.micro_batch
    seq = tokens / timed_rows
    n_params = sum(p.numel() for p in model.parameters())
    non_embed = n_params - model.get_input_embeddings().weight.numel()
    attn = cfg.num_attention_heads * getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads)
    flops = (6 * non_embed * tokens + 12 * cfg.num_hidden_layers * seq * attn * tokens
             + 6 * cfg.hidden_size * cfg.vocab_size * timed_rows)
    losses = [h["loss"] for h in hist]
    if device == "cuda":
        mem = f"{(torch.cuda.max_memory_allocated() - base_mem) / 2**30:.2f} GiB (reserved " \
              f"{torch.cuda.max_memory_reserved() / 2**30:.2f})"
    else:
        mem = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB process peak RSS"
    return {"losses": losses, "tok_s": tokens / secs, "tflops": flops / secs / 1e12,
            "mfu": flops / secs / 1e12 / peak_tflops, "mem": mem, "seq": seq, "s_step": secs / (len(hist) - w),
            "ok": losses[-1] < 0.8 * losses[0], "timed": f"{w + 1}-{len(hist)}"}


def cpu_facts() -> tuple[str, str]:
    name, flags = platform.processor() or "unknown", set()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    bf16 = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return name, ", ".join(bf16) or "none"


def check_model(key: str, root: Path, args, device: str, peak: float, log) -> dict:
    import torch

    tok_name, cfg_dict, display = MODELS[key]
    tok, sizes = load_tok(root, tok_name)
    cfg = model_config(cfg_dict, args.small)
    if len(tok) > cfg.vocab_size:
        raise SystemExit(f"{key}: tokenizer has {len(tok)} tokens, the config's vocabulary {cfg.vocab_size}")
    t0 = time.perf_counter()
    model = build_model(cfg, device, args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"{key}: {cfg.num_hidden_layers} layers, {n_params / 1e6:.1f}M params, built in {time.perf_counter() - t0:.1f} s")
    data = rows()
    dev_b = make_backend(model, tok, device, "bfloat16", f"gpu-check:{key}")
    ref_b = make_backend(model, tok, "cpu", "float32", f"gpu-check:{key}:fp32")
    assert next(dev_b.model.parameters()).dtype == torch.bfloat16 and dev_b.device == device
    sc = scoring(dev_b, ref_b, data, args.tol, device)
    log(f"{key}: scoring max|dp| options {sc['d_opt']:.4f}, texts {sc['d_txt']:.4f}")
    gen = generation(dev_b, ref_b, [r["text"] for r in data[:args.gen_prompts]], args.gen_tokens, device)
    log(f"{key}: generation {gen['tok_s']:.1f} tokens/s")
    del dev_b, ref_b
    gc.collect()
    with tempfile.TemporaryDirectory(prefix="w2s-gpu-check-") as work:
        tr = training(model, tok, cfg, data, args, device, peak, Path(work))
    log(f"{key}: training loss {tr['losses'][0]:.3f} -> {tr['losses'][-1]:.3f}, {tr['tok_s']:.0f} tokens/s")
    return {"display": display, "layers": cfg.num_hidden_layers, "params": n_params, "tok_sizes": sizes,
            "vocab": len(tok), "score": sc, "gen": gen, "train": tr, "ok": sc["ok"] and tr["ok"]}


def table(res: dict, args, device: str) -> list[str]:
    keys = list(res)
    dev = "cuda bf16" if device == "cuda" else "cpu bf16"
    lines = ["| check | " + " | ".join(res[k]["display"] for k in keys) + " | pass rule |",
             "|---|" + "---|" * len(keys) + "---|"]

    def row(name, fn, rule=""):
        lines.append(f"| {name} | " + " | ".join(fn(res[k]) for k in keys) + f" | {rule} |")

    row("layers / params", lambda r: f"{r['layers']} / {r['params'] / 1e6:.1f}M")
    row("tokenizer.json size / tokens", lambda r: f"{r['tok_sizes'].get('tokenizer.json', 0) / 1e6:.1f} MB / {r['vocab']}")
    row(f"(a) score_options max abs dp, {dev} vs cpu fp32", lambda r: f"{r['score']['d_opt']:.4f}", f"<= {args.tol}")
    row(f"(a) score_texts max abs dp, {dev} vs cpu fp32", lambda r: f"{r['score']['d_txt']:.4f}", f"<= {args.tol}")
    row("(a) same argmax option / rows", lambda r: f"{r['score']['agree']}/{r['score']['n']}", "info")
    row("(a) mean top option prob (fp32; 0.25 = uniform)", lambda r: f"{r['score']['top_p']:.3f}", "info")
    row(f"(a) score_options rows/s ({dev})", lambda r: f"{r['score']['rows_s']:.1f}", "info")
    row(f"(b) greedy generation tokens/s ({args.gen_prompts} prompts x {args.gen_tokens})",
        lambda r: f"{r['gen']['tok_s']:.1f}", "info")
    row("(b) greedy texts equal to fp32's", lambda r: f"{r['gen']['same']}/{r['gen']['n']}", "info")
    row(f"(c) train loss step 1 -> {args.steps} (fit_local, bf16 autocast, AdamW lr {args.lr:g})",
        lambda r: f"{r['train']['losses'][0]:.3f} -> {r['train']['losses'][-1]:.3f}", "last < 0.8 x first")
    row(f"(d) training tokens/s (steps {next(iter(res.values()))['train']['timed']}, "
        f"{args.micro_batch} rows x ~{next(iter(res.values()))['train']['seq']:.0f} tokens)",
        lambda r: f"{r['train']['tok_s']:.0f} ({r['train']['s_step']:.3f} s/step)", "info")
    row("(d) training model TFLOP/s, MFU vs measured bf16 peak",
        lambda r: f"{r['train']['tflops']:.3g}, {r['train']['mfu']:.1%}", "info")
    row("(d) peak memory, training", lambda r: r["train"]["mem"], "info")
    row("result", lambda r: "**PASS**" if r["ok"] else "**FAIL**")
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    watch = ImportWatch()
    sys.meta_path.insert(0, watch)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # train_loop and HFBackend take CUDA when they see it
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    t_start = time.perf_counter()
    import torch
    import transformers

    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    cuda = device == "cuda"
    for name, on_cuda, on_cpu in (("steps", 12, 6), ("warmup", 2, 1), ("micro_batch", 16, 4), ("train_len", 512, 64),
                                  ("gen_prompts", 8, 4), ("gen_tokens", 64, 16)):
        if getattr(args, name) is None:
            setattr(args, name, on_cuda if cuda else on_cpu)
    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    if bad := [k for k in keys if k not in MODELS]:
        raise SystemExit(f"--models: unknown {bad} (known: {', '.join(MODELS)})")
    if device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    cpu_name, cpu_bf16 = cpu_facts()
    head = [f"# GPU check ({'small: 2 layers' if args.small else 'full configs'}, seed {args.seed})", ""]
    if cuda:
        p = torch.cuda.get_device_properties(0)
        head.append(f"Device: {torch.cuda.get_device_name(0)} (capability {p.major}.{p.minor}, "
                    f"{p.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}, bf16 {torch.cuda.is_bf16_supported()}).")
    else:
        head.append("Device: CPU (no CUDA used).")
    head.append(f"CPU: {cpu_name}, {os.cpu_count()} cores, bf16 features: {cpu_bf16}. torch {torch.__version__}, "
                f"transformers {transformers.__version__}, Python {platform.python_version()}.")
    if not transformers.__version__.startswith("5."):
        head.append(f"WARNING: the embedded configs are transformers 5.x configs; this is {transformers.__version__}.")
    log = (lambda s: print(s, flush=True))
    peak = matmul_peak(device)
    head.append(f"Measured bf16 matmul peak ({'8192' if cuda else '2048'}^3, best of 3): {peak:.1f} TFLOP/s.")
    log(head[-1])
    res = {}
    with tokenizer_root(args.tokenizers) as root:
        for k in keys:
            res[k] = check_model(k, root, args, device, peak, log)
    sys.meta_path.remove(watch)
    loaded = watch.hits
    by_libs = [m for m in FORBIDDEN if m in sys.modules]
    head.append(f"Packages the GPU image lacks ({', '.join(FORBIDDEN)}) imported by the project's code: "
                f"{', '.join(loaded) or 'none'} (loaded by third-party optional-package probes: "
                f"{', '.join(by_libs) or 'none'}).")
    elapsed = time.perf_counter() - t_start
    ok = all(r["ok"] for r in res.values()) and not loaded
    lines = head + ["", *table(res, args, device), "",
                    f"Overall: {'PASS' if ok else 'FAIL'} in {elapsed:.0f} s (tokenizers from {args.tokenizers or default_tokenizer_dir()})."]
    text = "\n".join(lines)
    print("\n" + text, flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
