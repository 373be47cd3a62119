"""Full-parameter fine-tuning of an option-choice model on Ray Train, with DeepSpeed.

One loop serves every job: weak supervisors on ground truth, the strong ceiling on ground truth,
the strong model on weak labels (any W2S loss). `train_loop` is plain PyTorch (optionally under a
DeepSpeed engine, ZeRO 0-3, CPU offload); `fit` runs it on Ray Train's TorchTrainer with N
workers; `fit_local` runs it in this process (tests, debugging). Data order is a function of the
step (seeded permutation per epoch), so a run resumed from a checkpoint takes exactly the next
batch the uninterrupted run would have taken.

    python -m training.trainer --help     (jobs are normally started by `w2s run`)
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from training import losses as L
from training.examples import SEAM_SOURCES
from training.soft_labels import token_soft_label_loss

HEADS = ("lm", "classifier", "reward")
ENGINES = ("deepspeed", "torch")


@dataclass
class TrainConfig:
    lr: float = 1e-5
    epochs: float = 1.0
    max_steps: int = 0  # > 0: exactly this many optimizer steps (overrides epochs)
    micro_batch: int = 8  # rows per forward on each worker
    grad_accum: int = 1  # global batch = micro_batch x grad_accum x num_workers
    num_workers: int = 1  # Ray Train workers (data parallel)
    cpus_per_worker: float = 1.0
    use_gpu: str = "auto"  # auto: when CUDA is available to the driver | true | false
    engine: str = "deepspeed"  # deepspeed | torch (plain AdamW, no ZeRO)
    zero_stage: int = 2
    offload: bool = False  # ZeRO optimizer state offload to CPU
    precision: str = "auto"  # auto: bf16 autocast where supported, else fp32 | bf16 | fp32
    # lm: next-token prediction of the option label; classifier: K-way head; reward: a scalar
    # Bradley-Terry reward r(prompt, response) per option (preference pairs, examples with "texts")
    head: str = "lm"
    lm_normalize: str = "vocab"  # lm head: log-probs over the vocabulary (CLM) or over the K labels
    max_length: int = 512
    lr_schedule: str = "cosine"  # cosine | linear | constant
    warmup_steps: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    checkpoint_every: int = 0  # steps between checkpoints (0: none in between)
    checkpoint_at_end: bool = True  # full state (model + optimizer) after the last step
    max_failures: int = 1  # Ray Train restarts the workers from the last checkpoint this often
    seed: int = 0
    # W2S loss parameters
    gamma_max: float = 0.5  # aux confidence loss (seed 003 Eq. 1 / 5)
    gamma_warmup_frac: float = 0.2
    edl_lambda: float = 1.0  # EDL KL regulariser (seed 003 Appendix B) ...
    edl_anneal_frac: float = 0.5  # ... annealed linearly over this fraction of the steps
    # token-level soft labels (generation tasks, method soft_tokens; seed 003 section 4.2):
    # the per-token loss (ce: Eq. 1, edl: Eq. 5 with gamma_max / edl_lambda as above), how a word
    # score is split onto the strong tokens (training/soft_labels.py), the EDL KL coefficient
    # against a vocabulary-sized Dirichlet, and the per-token clamp (0: none)
    soft_loss: str = "ce"
    soft_split: str = "product"
    soft_kl_coef: float = 1.0
    soft_clamp_max: float = 0.0

    def __post_init__(self):
        checks = [
            (self.lr > 0, "lr", "must be > 0"), (self.epochs > 0 or self.max_steps > 0, "epochs", "must be > 0"),
            (self.max_steps >= 0, "max_steps", "must be >= 0"), (self.micro_batch >= 1, "micro_batch", "must be >= 1"),
            (self.grad_accum >= 1, "grad_accum", "must be >= 1"), (self.num_workers >= 1, "num_workers", "must be >= 1"),
            (self.cpus_per_worker > 0, "cpus_per_worker", "must be > 0"),
            (self.use_gpu in ("auto", "true", "false"), "use_gpu", "must be auto, true or false"),
            (self.engine in ENGINES, "engine", f"must be one of {ENGINES}"),
            (self.zero_stage in (0, 1, 2, 3), "zero_stage", "must be 0, 1, 2 or 3"),
            (self.precision in ("auto", "bf16", "fp32"), "precision", "must be auto, bf16 or fp32"),
            (self.head in HEADS, "head", f"must be one of {HEADS}"),
            (self.lm_normalize in ("vocab", "options"), "lm_normalize", "must be vocab or options"),
            (self.max_length >= 8, "max_length", "must be >= 8"),
            (self.lr_schedule in ("cosine", "linear", "constant"), "lr_schedule", "must be cosine, linear or constant"),
            (self.warmup_steps >= 0 and self.checkpoint_every >= 0, "warmup_steps", "must be >= 0"),
            (0 <= self.gamma_max <= 1, "gamma_max", "must be in [0, 1]"),
            (0 < self.gamma_warmup_frac <= 1 and 0 < self.edl_anneal_frac <= 1, "gamma_warmup_frac", "must be in (0, 1]"),
            (self.edl_lambda >= 0, "edl_lambda", "must be >= 0"),
            (not (self.offload and self.engine != "deepspeed"), "offload", "needs engine: deepspeed"),
            (self.soft_loss in ("ce", "edl"), "soft_loss", "must be ce or edl"),
            (self.soft_split in ("product", "eq8"), "soft_split", "must be product or eq8"),
            (self.soft_kl_coef >= 0 and self.soft_clamp_max >= 0, "soft_kl_coef", "must be >= 0 (and soft_clamp_max)"),
        ]
        for ok, name, msg in checks:
            if not ok:
                raise ValueError(f"{name}: {msg}")


@dataclass
class TrainJob:
    """Everything one fine-tuning run needs; passed whole to the workers (no globals)."""
    name: str
    spec: str
    out_dir: str  # <run_dir>/<stage>/<name>: model/, checkpoints/, history.jsonl
    train: TrainConfig
    examples: list[dict]
    method: str = "ground_truth"
    weak_weights: list[float] = field(default_factory=lambda: [1.0])
    chat: bool = False
    # label: one label token per option; text: the options' texts (template.answer); sequence:
    # one target text per example (`response`, generation tasks: SFT or token-level soft labels)
    answer: str = "label"
    num_options: int = 2


# ----------------------------------------------------------------------------- the loop


def total_steps(job: TrainJob, world: int) -> int:
    t = job.train
    if t.max_steps:
        return t.max_steps
    return max(1, math.ceil(t.epochs * len(job.examples) / (t.micro_batch * t.grad_accum * world)))


def step_indices(n: int, step: int, global_batch: int, seed: int) -> np.ndarray:
    """Example indices of one global batch: a stream of seeded per-epoch permutations."""
    start, out = step * global_batch, []
    epoch, offset = divmod(start, n)
    while len(out) < global_batch:
        perm = np.random.default_rng(seed + epoch).permutation(n)
        take = perm[offset:offset + global_batch - len(out)]
        out.extend(take.tolist())
        epoch, offset = epoch + 1, 0
    return np.array(out)


def lr_lambda(schedule: str, warmup: int, total: int):
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        frac = (step - warmup) / max(total - warmup, 1)
        if schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
        if schedule == "linear":
            return max(0.0, 1 - frac)
        return 1.0
    return f


def _left_pad(seqs: list[list[int]], pad_id: int) -> dict:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, s in enumerate(seqs):
        ids[r, width - len(s):] = torch.tensor(s)
        mask[r, width - len(s):] = 1
    return {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}


def collate(batch: list[dict], tok, label_cache: dict, job: TrainJob, device) -> dict:
    from actors.backend import encode_prompts, label_token_ids

    if job.answer == "sequence":
        return {k: v.to(device) for k, v in collate_sequences(batch, tok, job).items()}
    if job.train.head == "reward":  # B x K sequences: one rendered (prompt, response) text per option
        out = _left_pad(encode_prompts(tok, [x for e in batch for x in e["texts"]], job.chat, job.train.max_length),
                        tok.pad_token_id)
    elif job.answer == "text":  # B x K sequences: prompt + option text, continuation right-aligned
        conts = [tok(c, add_special_tokens=False)["input_ids"] for e in batch for c in e["labels"]]
        longest = max(len(c) for c in conts)
        prompts = encode_prompts(tok, [e["text"] for e in batch], job.chat, job.train.max_length - longest)
        k = len(batch[0]["labels"])
        out = _left_pad([prompts[i // k] + c for i, c in enumerate(conts)], tok.pad_token_id)
        out["cont_mask"] = torch.tensor([[j >= longest - len(c) for j in range(longest)] for c in conts])
    else:
        seqs = encode_prompts(tok, [e["text"] for e in batch], job.chat, job.train.max_length)
        out = _left_pad(seqs, tok.pad_token_id)
        out["label_ids"] = torch.tensor([label_token_ids(tok, e["labels"], label_cache) for e in batch])
    out.update({"target": torch.tensor([e["target"] for e in batch]),
                "weight": torch.tensor([e["weight"] for e in batch], dtype=torch.float32)})
    if batch[0].get("soft") is not None:
        out["soft"] = torch.tensor([e["soft"] for e in batch], dtype=torch.float32)
        out["weak_labels"] = torch.tensor([e["weak_labels"] for e in batch])
        out["weak_probs"] = torch.tensor([e["weak_probs"] for e in batch], dtype=torch.float32)
    return {k: v.to(device) for k, v in out.items()}


def collate_sequences(batch: list[dict], tok, job: TrainJob) -> dict:
    """Prompt + target (`response`) per example, left-padded; the target occupies the last
    n_b positions, so cont_mask [B, c] (c = the longest target) marks them from the right.
    With soft labels: token_word [B, c] (unit index per target token, -1 elsewhere) and
    word_logp [B, W] (log P(W) per unit, training/soft_labels.py)."""
    from actors.backend import encode_pairs

    seqs, conts = encode_pairs(tok, [e["text"] for e in batch], [e["response"] for e in batch], job.chat,
                               job.train.max_length)
    out = _left_pad(seqs, tok.pad_token_id)
    c = max(conts)
    out["cont_mask"] = torch.tensor([[j >= c - n for j in range(c)] for n in conts])
    if batch[0].get("token_word") is not None:
        tw = torch.full((len(batch), c), -1, dtype=torch.long)
        wl = torch.zeros((len(batch), max(1, max(len(e["word_logp"]) for e in batch))), dtype=torch.float32)
        for b, (e, n) in enumerate(zip(batch, conts)):
            if len(e["token_word"]) < n:
                raise ValueError(f"example {e['id']!r}: {len(e['token_word'])} soft-label tokens for {n} target tokens")
            tw[b, c - n:] = torch.tensor(e["token_word"][:n])  # encode_pairs keeps the first n target tokens
            wl[b, :len(e["word_logp"])] = torch.tensor(e["word_logp"])
        out.update(token_word=tw, word_logp=wl)
    return out


def sequence_logits(model, batch: dict) -> torch.Tensor:
    """Logits [B, c, V] at the target positions (position t predicts target token t), fp32."""
    c = batch["cont_mask"].shape[1]
    common = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
    return model(**common, logits_to_keep=c + 1).logits[:, :-1].float()


def sequence_loss(method: str, logits: torch.Tensor, batch: dict, step: int, total: int,
                  t: TrainConfig) -> tuple[torch.Tensor, dict]:
    """SFT (L.sequence_cross_entropy) on the target text, or (soft_tokens) the token-level soft
    labels of seed 003 section 4.2 with the run's soft_* settings, gamma and annealed lambda."""
    targets = batch["input_ids"][:, -logits.shape[1]:]
    if method != "soft_tokens":
        return L.sequence_cross_entropy(logits.log_softmax(-1), targets, batch["cont_mask"]), {}
    gamma = L.gamma_at(step, total, t.gamma_max, t.gamma_warmup_frac)
    lam = L.edl_anneal(step, int(t.edl_anneal_frac * total), t.edl_lambda)
    loss = token_soft_label_loss(logits, targets, batch["token_word"], batch["word_logp"], loss=t.soft_loss,
                                 split=t.soft_split, gamma=gamma, lam=lam, kl_coef=t.soft_kl_coef,
                                 clamp_max=t.soft_clamp_max or None)
    return loss, {"gamma": gamma, "lambda_t": lam}


def option_scores(model, batch: dict, head: str, lm_normalize: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probabilities [B, K], raw scores [B, K]) of the options, answer position only."""
    common = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
    if head == "reward":  # r(x, y_k) from the scalar head; softmax over K = Bradley-Terry for K = 2
        r = model(**common).logits[:, 0].float().view(batch["target"].shape[0], -1)
        return torch.log_softmax(r, -1), r
    if "cont_mask" in batch:
        return text_scores(model, batch, common, lm_normalize)
    if head == "classifier":
        logits = model(**common).logits.float()
        return torch.log_softmax(logits, -1), logits
    vocab = model(**common, logits_to_keep=1).logits[:, -1].float()
    logits = vocab.gather(1, batch["label_ids"])
    if lm_normalize == "vocab":  # the CLM loss of the label token (seed 001 Eq. 1, seed 000 Eq. 6)
        return torch.log_softmax(vocab, -1).gather(1, batch["label_ids"]), logits
    return torch.log_softmax(logits, -1), logits


def text_scores(model, batch: dict, common: dict, lm_normalize: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Answer-text options: s_k = (1/|y_k|) sum_i log p(y_k,i | x, y_k,<i) (seed 001 Eq. 1).
    vocab: log p(option) = s_k, the CLM objective itself; options: log-softmax of s over K.
    EDL's raw scores: s centred per row."""
    cont = batch["cont_mask"]
    c = cont.shape[1]
    logits = model(**common, logits_to_keep=c + 1).logits[:, :-1].float()  # position t predicts t + 1
    tok_lp = torch.log_softmax(logits, -1).gather(-1, batch["input_ids"][:, -c:].unsqueeze(-1)).squeeze(-1)
    s = (tok_lp * cont).sum(1) / cont.sum(1)
    b = batch["target"].shape[0]
    s = s.view(b, -1)
    logp = s if lm_normalize == "vocab" else torch.log_softmax(s, -1)
    return logp, s - s.mean(1, keepdim=True)


def compute_loss(method: str, logp, logits, batch, step: int, total: int, t: TrainConfig,
                 weak_weights: torch.Tensor) -> tuple[torch.Tensor, dict]:
    gamma = L.gamma_at(step, total, t.gamma_max, t.gamma_warmup_frac)
    if t.head == "reward":  # weight: 1, the weak confidence or the reliability (training.examples)
        if logits.shape[1] != 2:
            raise ValueError("strong.train.head: reward trains on preference pairs (2 options per row)")
        chosen = batch["target"].long().unsqueeze(1)
        return L.bradley_terry_loss(logits.gather(1, chosen).squeeze(1), logits.gather(1, 1 - chosen).squeeze(1),
                                    batch["weight"]), {}
    if method in ("ground_truth", "naive", "rel_filter") or method in SEAM_SOURCES:
        return L.cross_entropy(logp, batch["target"]), {}
    if method == "rel_reweight":
        return L.cross_entropy(logp, batch["target"], batch["weight"]), {}
    if method == "soft":
        return L.soft_cross_entropy(logp, batch["soft"]), {}
    if method == "aux_conf":
        return L.aux_confidence_loss(logp, batch["target"], gamma), {"gamma": gamma}
    if method == "ensemble":
        return L.naive_multi_weak_loss(logp, batch["weak_labels"], weak_weights), {}
    if method == "bayes":
        lam = L.edl_anneal(step, int(t.edl_anneal_frac * total), t.edl_lambda)
        return L.bayesian_multi_weak_loss(logits, batch["weak_probs"], weak_weights, gamma, lam), \
            {"gamma": gamma, "lambda_t": lam}
    raise ValueError(f"unknown training method {method!r}")


def _autocast(t: TrainConfig, device: str):
    from actors.backend import cpu_supports_bf16

    want = t.precision == "bf16" or (t.precision == "auto" and (
        (device.startswith("cuda") and torch.cuda.is_bf16_supported()) or (device == "cpu" and cpu_supports_bf16())))
    return torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=want)


def deepspeed_config(t: TrainConfig, world: int) -> dict:
    zero: dict = {"stage": t.zero_stage}
    if t.offload:
        zero["offload_optimizer"] = {"device": "cpu"}
    if t.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {"train_micro_batch_size_per_gpu": t.micro_batch, "gradient_accumulation_steps": t.grad_accum,
            "train_batch_size": t.micro_batch * t.grad_accum * world, "gradient_clipping": t.grad_clip,
            "zero_optimization": zero, "zero_allow_untested_optimizer": True, "steps_per_print": 10**9,
            "wall_clock_breakdown": False}


def train_loop(job: TrainJob, rank: int, world: int, resume_dir: str | None, report) -> dict:
    """The training loop. `report(metrics, checkpoint_dir | None)` is Ray Train's or the local one."""
    import torch.distributed as dist

    from actors.registry import load_model

    t = job.train
    device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(t.seed)
    head = "causal_lm" if t.head == "lm" else "classifier"
    labels = {"classifier": job.num_options, "reward": 1}.get(t.head)
    model, tok = load_model(job.spec, head, num_labels=labels,
                            dtype=torch.float32, device=device)
    model.train()
    steps = total_steps(job, world)
    schedule = lr_lambda(t.lr_schedule, t.warmup_steps, steps)
    engine = None
    if t.engine == "deepspeed" and t.offload:
        import deepspeed

        # ZeRO-Offload steps the optimizer on the CPU with DeepSpeed's own (CPU) AdamW, built from
        # the config; the schedule is handed over as a callable on that optimizer
        ds_cfg = deepspeed_config(t, world)
        ds_cfg["optimizer"] = {"type": "AdamW", "params": {"lr": t.lr, "weight_decay": t.weight_decay}}
        engine, optimizer, _, scheduler = deepspeed.initialize(
            model=model, model_parameters=model.parameters(), config=ds_cfg,
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule))
        model = engine.module
    else:
        # fused AdamW: 8x faster than the default loop on CPU (0.16 s vs 1.27 s for Gemma-3-270M)
        optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay, fused=True)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        if t.engine == "deepspeed":
            import deepspeed

            engine, optimizer, _, scheduler = deepspeed.initialize(
                model=model, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config(t, world))
            model = engine.module
    start = 0
    if resume_dir:
        start = _load_checkpoint(resume_dir, engine, model, optimizer, scheduler)
    weak_w = torch.tensor(job.weak_weights, dtype=torch.float32, device=device)
    label_cache: dict = {}
    global_batch = t.micro_batch * t.grad_accum * world
    history = Path(job.out_dir) / "history.jsonl"
    if rank == 0:
        _truncate_history(history, start)
    t0 = time.time()
    for step in range(start, steps):
        idx = step_indices(len(job.examples), step, global_batch, t.seed)
        losses, extra, n_tok = [], {}, 0
        for m in range(t.grad_accum):
            part = idx[(m * world + rank) * t.micro_batch:(m * world + rank + 1) * t.micro_batch]
            batch = collate([job.examples[i] for i in part], tok, label_cache, job, device)
            if job.answer == "sequence":
                with _autocast(t, device):
                    logits = sequence_logits(engine or model, batch)
                loss, extra = sequence_loss(job.method, logits, batch, step, steps, t)
            else:
                with _autocast(t, device):
                    logp, logits = option_scores(engine or model, batch, t.head, t.lm_normalize)
                loss, extra = compute_loss(job.method, logp, logits, batch, step, steps, t, weak_w)
            if engine is not None:
                engine.backward(loss)
                engine.step()  # DeepSpeed steps the optimizer at the accumulation boundary
            else:
                (loss / t.grad_accum).backward()
            losses.append(loss.item())
            n_tok += int(batch["attention_mask"].sum())
        if engine is None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        mean_loss = float(np.mean(losses))
        if world > 1:
            buf = torch.tensor([mean_loss, float(n_tok)], device=device)
            dist.all_reduce(buf)
            mean_loss, n_tok = buf[0].item() / world, int(buf[1].item())
        metrics = {"step": step + 1, "loss": mean_loss, "lr": scheduler.get_last_lr()[0], "tokens": n_tok,
                   "seconds": round(time.time() - t0, 3), **extra}
        if rank == 0:
            with open(history, "a") as f:
                f.write(json.dumps(metrics) + "\n")
        due = (t.checkpoint_every and (step + 1) % t.checkpoint_every == 0) or (t.checkpoint_at_end and step + 1 == steps)
        if due:
            with tempfile.TemporaryDirectory(prefix="w2s-ckpt-") as d:
                _save_checkpoint(d, step + 1, engine, model, optimizer, scheduler)
                report(metrics, d)
        else:
            report(metrics, None)
    _save_model(job, engine, model, tok, rank)
    return {"steps": steps, "final_loss": metrics["loss"] if steps > start else None}


def _truncate_history(path: Path, start: int) -> None:
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= start]
    path.write_text("".join(line + "\n" for line in kept))


def _save_checkpoint(d: str, step: int, engine, model, optimizer, scheduler) -> None:
    if engine is not None:
        engine.save_checkpoint(d, tag="state", client_state={"w2s_step": step})
    else:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict()}, os.path.join(d, "state.pt"))
    Path(d, "w2s_step.json").write_text(json.dumps({"step": step}))


def _load_checkpoint(d: str, engine, model, optimizer, scheduler) -> int:
    if engine is not None:
        engine.load_checkpoint(d, tag="state")
    else:
        state = torch.load(os.path.join(d, "state.pt"), map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    return json.loads(Path(d, "w2s_step.json").read_text())["step"]


def _save_model(job: TrainJob, engine, model, tok, rank: int) -> None:
    """Hugging Face directory <out_dir>/model (ZeRO-3 weights gathered first)."""
    state = None
    if engine is not None and job.train.zero_stage == 3:
        state = engine._zero3_consolidated_16bit_state_dict()  # collective: every rank calls it
    if rank != 0:
        return
    out = Path(job.out_dir) / "model"
    tmp = out.with_name("model.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if state is not None:
        model.save_pretrained(tmp, state_dict={k: v.float() for k, v in state.items()})
    else:
        model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


# ----------------------------------------------------------------------------- runners


def ray_train_worker(job: TrainJob) -> None:
    """Ray Train per-worker entry: rank / world / checkpoint from ray.train."""
    import ray.train

    ctx = ray.train.get_context()
    ckpt = ray.train.get_checkpoint()

    def report(metrics, d):
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d) if d else None)

    if ckpt is None:
        train_loop(job, ctx.get_world_rank(), ctx.get_world_size(), None, report)
        return
    with ckpt.as_directory() as d:
        train_loop(job, ctx.get_world_rank(), ctx.get_world_size(), d, report)


def _use_gpu(t: TrainConfig) -> bool:
    return t.use_gpu == "true" or (t.use_gpu == "auto" and torch.cuda.is_available())


def latest_checkpoint(storage: Path):
    """The newest complete Ray Train checkpoint under a run's storage folder, or None."""
    import ray.train

    found = sorted(storage.glob("**/checkpoint_*/w2s_step.json"), key=lambda p: json.loads(p.read_text())["step"])
    return ray.train.Checkpoint.from_directory(str(found[-1].parent)) if found else None


def fit(job: TrainJob, log=print) -> dict:
    """Run a job on Ray Train (TorchTrainer, job.train.num_workers workers); resumes from the
    newest checkpoint under <out_dir>/ray_train, and restarts failed workers from it. Ray Train 2.60
    (Train V2) restores a run's newest checkpoint itself when the same name and storage path run
    again (it refuses `resume_from_checkpoint`); `ray.train.get_checkpoint()` hands it to the loop."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    t = job.train
    out = Path(job.out_dir).resolve()
    job = replace(job, out_dir=str(out))  # workers run in their own working directories
    storage = out / "ray_train"
    resume = latest_checkpoint(storage)
    use_gpu = _use_gpu(t)
    resources = {"CPU": t.cpus_per_worker}
    from cluster.config import MALLOC_ENV

    env = dict(MALLOC_ENV)
    if not use_gpu:
        env["DS_ACCELERATOR"] = "cpu"  # explicit: DeepSpeed otherwise warns on every worker
    trainer = TorchTrainer(
        ray_train_worker, train_loop_config=job,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=t.num_workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(name=job.name, storage_path=str(storage), worker_runtime_env={"env_vars": env},
                             failure_config=FailureConfig(max_failures=t.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
    )
    t0 = time.time()
    log(f"train {job.name}: {len(job.examples)} examples, {t.num_workers} worker(s), engine {t.engine}"
        f"{f' ZeRO-{t.zero_stage}' if t.engine == 'deepspeed' else ''}"
        f"{', resuming' if resume else ''}")
    trainer.fit()
    return _finish(job, time.time() - t0, log)


def fit_local(job: TrainJob, log=print) -> dict:
    """The same loop in this process (world size 1); checkpoints under <out_dir>/checkpoints."""
    ckpt_root = Path(job.out_dir) / "checkpoints"
    found = sorted(ckpt_root.glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    resume = str(found[-1]) if found else None

    def report(metrics, d):
        if d:
            dest = ckpt_root / f"step_{metrics['step']:06d}"
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(d, dest)

    t0 = time.time()
    if job.train.engine == "deepspeed":
        _init_single_process_group()
    train_loop(job, 0, 1, resume, report)
    return _finish(job, time.time() - t0, log)


def _init_single_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1",
                       "LOCAL_RANK": "0"})
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo")


def read_history(out_dir: str | Path) -> list[dict]:
    path = Path(out_dir) / "history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.is_file() else []


def _finish(job: TrainJob, seconds: float, log) -> dict:
    hist = read_history(job.out_dir)
    tokens = sum(h.get("tokens", 0) for h in hist)
    summary = {"name": job.name, "method": job.method, "examples": len(job.examples), "steps": len(hist),
               "first_loss": hist[0]["loss"] if hist else None, "final_loss": hist[-1]["loss"] if hist else None,
               "seconds": round(seconds, 1), "model_dir": str(Path(job.out_dir) / "model"), "tokens": tokens,
               "config": asdict(job.train)}
    log(f"train {job.name}: {summary['steps']} steps in {seconds:.1f} s, loss "
        f"{summary['first_loss'] if summary['first_loss'] is None else round(summary['first_loss'], 4)} -> "
        f"{summary['final_loss'] if summary['final_loss'] is None else round(summary['final_loss'], 4)}")
    return summary
