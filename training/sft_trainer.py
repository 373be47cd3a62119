"""Full-parameter fine-tuning of an option-choice model on Ray Train, with DeepSpeed.

One loop serves every job: weak supervisors on ground truth, the strong ceiling on ground truth,
the strong model on weak labels (any W2S loss). `train_loop` is plain PyTorch (optionally under a
DeepSpeed engine, ZeRO 0-3, CPU offload); `fit` runs it on Ray Train's TorchTrainer with N
workers; `fit_local` runs it in this process (tests, debugging). Data order is a function of the
step (seeded permutation per epoch), so a run resumed from a checkpoint takes exactly the next
batch the uninterrupted run would have taken.

The run's settings are training.sft_config.TrainConfig (optimisation fields shared with DPO:
training.optim_config.OptimConfig). Job guard, history.jsonl, checkpoint reporting, the
TorchTrainer and resume by name + storage are training.launcher's, shared with training.dpo_trainer.

precision: bf16 (`auto`: where the device supports it and runs it faster, training.optim_config.resolve_precision)
is torch.autocast around the forward; weights, gradients and optimizer state stay fp32.

Jobs are normally started by `w2s run` (pipelines.train_stages.run_job).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from training import launcher
from training import losses as L
from training.launcher import read_history
from training.optim_config import resolve_precision, resolve_use_gpu
from training.sft_config import HEADS, TrainConfig

__all__ = ["HEADS", "TrainConfig", "TrainJob", "fit", "fit_local", "read_history", "train_loop"]

CHECKPOINT_MARKER = "w2s_step.json"  # written last into each checkpoint: {"step": n}
# Ray Train V2 hands each report to a queue of size 1 that its controller drains once per health
# check (Ray's 2 s; OptimConfig.controller_poll_s, 0.5 s by default here), so a report per step
# held every step to >= the poll (measured at 2 s: 1.95 s per step for 0.04 s of work). Metrics go
# to history.jsonl every step; Ray gets one every REPORT_EVERY_S (and each checkpoint and the last
# step), so the queue is always empty when it does.
REPORT_EVERY_S = 10.0


def report_due(step: int, steps: int, last_report: float) -> bool:
    """Whether 0-based `step` reports to Ray: the last step, or REPORT_EVERY_S since the last report."""
    return step + 1 == steps or time.time() - last_report >= REPORT_EVERY_S


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
    # the method's loss (pipelines/methods): loss(logp, logits, batch, ctx) for option heads,
    # loss(logits, batch, ctx) for sequences; None: cross-entropy on `target` / SFT. A
    # module-level function, so Ray Train pickles it by reference.
    loss: Callable | None = None


@dataclass
class LossContext:
    """What a loss may depend on beyond the batch: the step, the total steps, the train config
    and the weak models' normalised weights; gamma (Eq. 1 warm-up) and the annealed EDL lambda."""
    step: int
    total: int
    train: TrainConfig
    weak_weights: torch.Tensor

    @property
    def gamma(self) -> float:
        return L.gamma_at(self.step, self.total, self.train.gamma_max, self.train.gamma_warmup_frac)

    @property
    def lam(self) -> float:
        return L.edl_anneal(self.step, int(self.train.edl_anneal_frac * self.total), self.train.edl_lambda)


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


def collate(batch: list[dict], tok, label_cache: dict, job: TrainJob, device, pack_model=None) -> dict:
    """The model inputs of one micro-batch. pack_model: answer-text rows become one packed sequence
    each (actors/packing.py), with the block mask built for this model's attention layers."""
    from actors.backend import encode_prompts, label_token_ids

    if job.answer == "text" and pack_model is not None and job.train.head != "reward":
        return _collate_packed(batch, tok, job, device, pack_model)
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
    return {**{k: v.to(device) for k, v in out.items()}, **_targets(batch, device)}


def _collate_packed(batch: list[dict], tok, job: TrainJob, device, model) -> dict:
    """Answer-text rows packed: prompt cut to max_length minus the longest option of the batch
    (the K-sequence path's rule, so both see the same tokens)."""
    from actors.packing import attention_mask_for, encode_option_rows, pack_rows

    prompts, opts = encode_option_rows(tok, [e["text"] for e in batch], [e["labels"] for e in batch], job.chat,
                                       job.train.max_length, per_row=False)
    out = pack_rows(prompts, opts, tok.pad_token_id)
    keep = out.pop("keep")
    out = {k: v.to(device) for k, v in out.items()}
    out["attention_mask"] = attention_mask_for(model, out["segment"], out["position_ids"])
    out["keep"] = keep
    out.update(_targets(batch, device))
    return out


def _targets(batch: list[dict], device) -> dict:
    out = {"target": torch.tensor([e["target"] for e in batch]),
           "weight": torch.tensor([e["weight"] for e in batch], dtype=torch.float32)}
    if batch[0].get("soft") is not None:
        out["soft"] = torch.tensor([e["soft"] for e in batch], dtype=torch.float32)
        out["weak_labels"] = torch.tensor([e["weak_labels"] for e in batch])
        out["weak_probs"] = torch.tensor([e["weak_probs"] for e in batch], dtype=torch.float32)
    if batch[0].get("truth") is not None:  # the true option (seed 002's explicit conflict term)
        out["truth"] = torch.tensor([e["truth"] for e in batch])
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


def sequence_loss(loss_fn, logits: torch.Tensor, batch: dict, ctx: LossContext) -> tuple[torch.Tensor, dict]:
    """The method's sequence loss, or SFT (L.sequence_cross_entropy) on the target text."""
    if loss_fn is not None:
        return loss_fn(logits, batch, ctx)
    targets = batch["input_ids"][:, -logits.shape[1]:]
    return L.sequence_cross_entropy(logits.log_softmax(-1), targets, batch["cont_mask"]), {}


def option_scores(model, batch: dict, head: str, lm_normalize: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probabilities [B, K], raw scores [B, K]) of the options, answer position only."""
    common = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
    if head == "reward":  # r(x, y_k) from the scalar head; softmax over K = Bradley-Terry for K = 2
        r = model(**common).logits[:, 0].float().view(batch["target"].shape[0], -1)
        return torch.log_softmax(r, -1), r
    if "segment" in batch:
        return packed_text_scores(model, batch, lm_normalize)
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


def packed_text_scores(model, batch: dict, lm_normalize: str) -> tuple[torch.Tensor, torch.Tensor]:
    """text_scores on packed rows: the same s_k, one sequence per row (actors/packing.py)."""
    from actors.packing import option_mean_logprobs

    s = option_mean_logprobs(model, batch)
    logp = s if lm_normalize == "vocab" else torch.log_softmax(s, -1)
    return logp, s - s.mean(1, keepdim=True)


def compute_loss(loss_fn, logp, logits, batch, ctx: LossContext) -> tuple[torch.Tensor, dict]:
    """The reward head's Bradley-Terry loss; else the method's loss, or cross-entropy on `target`."""
    if ctx.train.head == "reward":  # weight: 1, the weak confidence or the reliability (training.examples)
        if logits.shape[1] != 2:
            raise ValueError("strong.train.head: reward trains on preference pairs (2 options per row)")
        chosen = batch["target"].long().unsqueeze(1)
        return L.bradley_terry_loss(logits.gather(1, chosen).squeeze(1), logits.gather(1, 1 - chosen).squeeze(1),
                                    batch["weight"]), {}
    if loss_fn is not None:
        return loss_fn(logp, logits, batch, ctx)
    return L.cross_entropy(logp, batch["target"]), {}


def _autocast(t: TrainConfig, device: str):
    want = resolve_precision(t.precision, device) == "bf16"
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

    from actors.packing import supports_packing
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
    pack_model = model if job.answer == "text" and t.shared_prompt and supports_packing(model) else None
    global_batch = t.micro_batch * t.grad_accum * world
    history = launcher.history_path(job.out_dir)
    if rank == 0:
        launcher.truncate_history(history, start)
    t0 = last_report = time.time()
    for step in range(start, steps):
        idx = step_indices(len(job.examples), step, global_batch, t.seed)
        losses, extra, n_tok = [], {}, 0
        for m in range(t.grad_accum):
            part = idx[(m * world + rank) * t.micro_batch:(m * world + rank + 1) * t.micro_batch]
            batch = collate([job.examples[i] for i in part], tok, label_cache, job, device, pack_model)
            if job.answer == "sequence":
                with _autocast(t, device):
                    logits = sequence_logits(engine or model, batch)
                loss, extra = sequence_loss(job.loss, logits, batch, LossContext(step, steps, t, weak_w))
            else:
                with _autocast(t, device):
                    logp, logits = option_scores(engine or model, batch, t.head, t.lm_normalize)
                loss, extra = compute_loss(job.loss, logp, logits, batch, LossContext(step, steps, t, weak_w))
            if engine is not None:
                engine.backward(loss)
                engine.step()  # DeepSpeed steps the optimizer at the accumulation boundary
            else:
                (loss / t.grad_accum).backward()
            losses.append(loss.item())
            n_tok += int((batch["segment"] >= 0).sum() if "segment" in batch else batch["attention_mask"].sum())
        if engine is None:
            if world > 1:
                average_gradients(model.parameters(), world)
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        mean_loss = float(np.mean(losses))
        report_now = report_due(step, steps, last_report)
        if world > 1:
            # rank 0's clock decides for all: every rank must call report the same number of times
            buf = torch.tensor([mean_loss, float(n_tok), float(report_now and rank == 0)], device=device)
            dist.all_reduce(buf)
            mean_loss, n_tok, report_now = buf[0].item() / world, int(buf[1].item()), buf[2].item() > 0
        metrics = {"step": step + 1, "loss": mean_loss, "lr": scheduler.get_last_lr()[0], "tokens": n_tok,
                   "seconds": round(time.time() - t0, 3), **extra}
        if rank == 0:
            launcher.append_history(history, metrics)
        due = (t.checkpoint_every and (step + 1) % t.checkpoint_every == 0) or (t.checkpoint_at_end and step + 1 == steps)
        if due:
            with tempfile.TemporaryDirectory(prefix="w2s-ckpt-") as d:
                _save_checkpoint(d, step + 1, engine, model, optimizer, scheduler)
                report(metrics, d)
            last_report = time.time()
        elif report_now:
            report(metrics, None)
            last_report = time.time()
    _save_model(job, engine, model, tok, rank)
    return {"steps": steps, "final_loss": metrics["loss"] if steps > start else None}


def average_gradients(params, world: int, bucket_numel: int = 1 << 24) -> None:
    """Data parallel for engine torch: g <- (1/world) sum_r g_r, in place, once per optimizer step
    (after the accumulation, so accumulation needs no `no_sync`). Gradients go in flat buckets,
    each closed once it holds `bucket_numel` elements or more: one collective per bucket, not per
    tensor, and no full-size copy of the model's gradients at once. Every rank holds the same gradients afterwards."""
    import torch.distributed as dist

    grads = [p.grad for p in params if p.grad is not None]
    bucket, n = [], 0
    for i, g in enumerate(grads):
        bucket.append(g)
        n += g.numel()
        if n >= bucket_numel or i == len(grads) - 1:
            flat = torch.cat([b.reshape(-1) for b in bucket])
            dist.all_reduce(flat)
            flat /= world
            for b, part in zip(bucket, flat.split([b.numel() for b in bucket])):
                b.copy_(part.view_as(b))
            bucket, n = [], 0


def _save_checkpoint(d: str, step: int, engine, model, optimizer, scheduler) -> None:
    if engine is not None:
        engine.save_checkpoint(d, tag="state", client_state={"w2s_step": step})
    else:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict()}, os.path.join(d, "state.pt"))
    Path(d, CHECKPOINT_MARKER).write_text(json.dumps({"step": step}))


def _load_checkpoint(d: str, engine, model, optimizer, scheduler) -> int:
    if engine is not None:
        engine.load_checkpoint(d, tag="state")
    else:
        state = torch.load(os.path.join(d, "state.pt"), map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    return json.loads(Path(d, CHECKPOINT_MARKER).read_text())["step"]


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
    """Ray Train per-worker entry: rank / world from ray.train, the restored checkpoint (if any)
    from training.launcher."""
    import ray.train

    ctx = ray.train.get_context()
    with launcher.restored_checkpoint() as d:
        train_loop(job, ctx.get_world_rank(), ctx.get_world_size(), d, launcher.report)


def latest_checkpoint(storage: Path) -> Path | None:
    """The newest complete Ray Train checkpoint folder under a run's storage folder, or None."""
    return launcher.latest_checkpoint(storage, CHECKPOINT_MARKER, "step")


def fit(job: TrainJob, log=print) -> dict:
    """Run a job on Ray Train (training.launcher: TorchTrainer, job.train.num_workers workers);
    resumes from the newest checkpoint under <out_dir>/ray_train, and restarts failed workers from
    it. Ray Train 2.60 (Train V2) restores a run's newest checkpoint itself when the same name and
    storage path run again (it refuses `resume_from_checkpoint`); `ray.train.get_checkpoint()`
    hands it to the loop."""
    t = job.train
    out = Path(job.out_dir).resolve()
    job = replace(job, out_dir=str(out))  # workers run in their own working directories
    storage = out / "ray_train"
    resume = latest_checkpoint(storage)
    log(f"train {job.name}: {len(job.examples)} examples, {t.num_workers} worker(s), engine {t.engine}"
        f"{f' ZeRO-{t.zero_stage}' if t.engine == 'deepspeed' else ''}"
        f"{', resuming' if resume else ''}")
    seconds = launcher.launch(ray_train_worker, job, t, name=job.name, storage=storage,
                              use_gpu=resolve_use_gpu(t.use_gpu))
    return _finish(job, seconds, log)


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
        launcher.init_single_process_group()
    train_loop(job, 0, 1, resume, report)
    return _finish(job, time.time() - t0, log)


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
