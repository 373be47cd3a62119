"""DPO / conservative DPO through TRL's DPOTrainer (training/dpo_trainer.py), on tiny random models:
TRL's loss with our configuration equals seed 003 Eq. 9 / 12 (training.losses.cdpo_loss) on
independently computed sequence log-probs; a 2-worker Ray Train + DeepSpeed ZeRO-2 run lowers the
loss, moves the policy and saves a loadable model; the stage skips / refuses; a rerun resumes from
Ray Train's checkpoint; bad datasets are refused with the column named."""

import json
import math
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from actors.registry import load_model
from training import dpo_trainer as D
from training.dpo_config import DPOConfig
from training.dpo_trainer import (DPOJob, build_trainer, dpo_config, fit_dpo, fit_dpo_local, read_history,
                                  read_preferences, run_dpo_stage, trl_loss_args)
from training.losses import cdpo_loss

POLICY, REF = "tiny:llama:1", "tiny:llama:2"  # different seeds: h != 0, so eps matters
HAND = {"prompt": ["Question: is the sky blue?\nAnswer:", "Question: what is two plus two?\nAnswer:"],
        "chosen": [" Yes, it is.", " Four."], "rejected": [" No.", " Five, I think."],
        "score_chosen": [0.9, 0.8], "score_rejected": [0.1, 0.3]}  # extra columns: ignored


def _write(path: Path, rows: dict) -> str:
    pq.write_table(pa.table(rows), path)
    return str(path)


def _seq_logps(spec: str, prompts: list[str], completions: list[str]) -> torch.Tensor:
    """sum_t log p(y_t | x, y_<t) over the completion tokens (+ EOS, as TRL appends it), by hand."""
    model, tok = load_model(spec)
    model.eval()
    out = []
    for p, c in zip(prompts, completions):
        ids_p = tok(p)["input_ids"]
        ids_c = tok(c + tok.eos_token, add_special_tokens=False)["input_ids"]
        assert tok(p + c + tok.eos_token)["input_ids"] == ids_p + ids_c  # the split is unambiguous
        ids = torch.tensor([ids_p + ids_c])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
        tok_lp = logp.gather(1, ids[0, 1:, None])[:, 0]
        out.append(tok_lp[len(ids_p) - 1:].sum())
    return torch.stack(out)


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    d = tmp_path_factory.mktemp("hand")
    data = _write(d / "pairs.parquet", HAND)
    lp = {name: _seq_logps(spec, HAND["prompt"], HAND[col])
          for name, spec, col in (("pc", POLICY, "chosen"), ("pr", POLICY, "rejected"),
                                  ("rc", REF, "chosen"), ("rr", REF, "rejected"))}
    return data, lp


def _trl_loss(data: str, out: Path, beta: float, eps: float, **overrides) -> tuple[float, dict]:
    # fp32: compared with log-probs computed by hand in fp32 (precision auto is bf16 on a bf16 CPU)
    job = DPOJob(name="hand", policy=POLICY, ref=REF, data=data, out_dir=str(out),
                 config=DPOConfig(beta=beta, epsilon=eps, micro_batch=2, engine="torch", precision="fp32"))
    trainer = build_trainer(job, dpo_config(job, str(out / "ck"), on_gpu=False, **overrides))
    batch = next(iter(trainer.get_train_dataloader()))  # both pairs
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch).item()
    return loss, batch


def test_weights_reduce_to_eq12_algebraically():
    h = torch.linspace(-6, 6, 25)
    ls = torch.nn.functional.logsigmoid
    for eps in (0.0, 0.05, 0.1, 0.3, 0.49):
        a = trl_loss_args(0.1, eps)
        if eps == 0:
            assert a["loss_type"] == ["sigmoid"]
            continue
        w_sig, w_rob = a["loss_weights"]
        robust = (-(1 - eps) * ls(h) + eps * ls(-h)) / (1 - 2 * eps)  # TRL 1.16's "robust" per pair
        combined = w_sig * -ls(h) + w_rob * robust
        eq12 = (1 - eps) * -ls(h) + eps * -ls(-h)
        assert torch.allclose(combined, eq12, atol=1e-6)
    with pytest.raises(ValueError, match="epsilon"):
        trl_loss_args(0.1, 0.5)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_cdpo_through_trl_equals_eq12(hand, tmp_path, eps):
    data, lp = hand
    beta = 1.0
    loss, batch = _trl_loss(data, tmp_path, beta, eps)
    # TRL's precomputed reference log-probs are the hand-computed ones (rows may be shuffled)
    got = sorted(zip(batch["ref_chosen_logps"].tolist(), batch["ref_rejected_logps"].tolist()))
    want = sorted(zip(lp["rc"].tolist(), lp["rr"].tolist()))
    assert torch.allclose(torch.tensor(got), torch.tensor(want), atol=1e-4)
    expected = cdpo_loss(lp["pc"], lp["pr"], lp["rc"], lp["rr"], beta, eps).item()
    assert loss == pytest.approx(expected, abs=1e-5)
    if eps:  # the batch is discriminating: eps changes the value
        assert abs(expected - cdpo_loss(lp["pc"], lp["pr"], lp["rc"], lp["rr"], beta, 0.0).item()) > 1e-3


def test_sft_term_adds_the_chosen_tokens_mean_nll(hand, tmp_path):
    """sft_weight w: TRL's loss = Eq. 12 + w x (-mean log-prob of the chosen completions' tokens)."""
    data, lp = hand
    _, tok = load_model(POLICY)
    n_chosen = sum(len(tok(c + tok.eos_token, add_special_tokens=False)["input_ids"]) for c in HAND["chosen"])
    w = 0.2
    args = {k: v for k, v in trl_loss_args(1.0, 0.1, w).items() if k != "beta"}
    loss, _ = _trl_loss(data, tmp_path, 1.0, 0.1, **args)
    eq12 = cdpo_loss(lp["pc"], lp["pr"], lp["rc"], lp["rr"], 1.0, 0.1).item()
    assert loss == pytest.approx(eq12 + w * -(lp["pc"].sum().item() / n_chosen), abs=1e-4)
    assert trl_loss_args(0.1, 0.0, w)["loss_type"] == ["sigmoid", "sft"]
    with pytest.raises(ValueError, match="sft_weight"):
        trl_loss_args(0.1, 0.0, -1.0)


def test_plain_sigmoid_ignores_label_smoothing(hand, tmp_path):
    """The TRL 1.16 pitfall this module works around: loss_type='sigmoid' + label_smoothing=0.1 is
    plain DPO, not Eq. 12."""
    data, lp = hand
    loss, _ = _trl_loss(data, tmp_path, 1.0, 0.1, loss_type=["sigmoid"], loss_weights=None, label_smoothing=0.1)
    dpo = cdpo_loss(lp["pc"], lp["pr"], lp["rc"], lp["rr"], 1.0, 0.0).item()
    eq12 = cdpo_loss(lp["pc"], lp["pr"], lp["rc"], lp["rr"], 1.0, 0.1).item()
    assert loss == pytest.approx(dpo, abs=1e-5)
    assert abs(loss - eq12) > 1e-3


def test_parquet_with_extra_columns_loads_in_dpo_trainer(tmp_path):
    rows = {"id": ["a", "b", "c"], "prompt": ["Is 2 even?", "Is 3 even?", "Is 4 even?"],
            "chosen": [" Yes.", " No.", " Yes."], "rejected": [" No.", " Yes.", " No."],
            "score_chosen": [0.9, 0.7, 0.8], "score_rejected": [0.2, 0.1, 0.3], "weak_scores": [[1.0, 2.0]] * 3}
    job = DPOJob(name="extra", policy=POLICY, data=_write(tmp_path / "p.parquet", rows), out_dir=str(tmp_path),
                 config=DPOConfig(micro_batch=3, engine="torch"))
    trainer = build_trainer(job, dpo_config(job, str(tmp_path / "ck"), on_gpu=False))
    batch = next(iter(trainer.get_train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "completion_mask", "ref_chosen_logps", "ref_rejected_logps"}
    assert batch["input_ids"].shape[0] == 6  # [3 chosen; 3 rejected]
    tok = trainer.processing_class
    completions = {tok.decode(r[m.bool()]) for r, m in zip(batch["input_ids"], batch["completion_mask"])}
    assert completions == {" Yes." + tok.eos_token, " No." + tok.eos_token}
    assert torch.isfinite(batch["ref_chosen_logps"]).all()


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("rows,column", [
    ({"prompt": ["p"], "chosen": ["a"]}, "rejected"),
    ({"prompt": ["p", "q"], "chosen": ["a", ""], "rejected": ["b", "c"]}, "chosen"),
    ({"prompt": ["p", "   "], "chosen": ["a", "b"], "rejected": ["b", "c"]}, "prompt"),
    ({"prompt": ["p", None], "chosen": ["a", "b"], "rejected": ["b", "c"]}, "prompt"),
    ({"prompt": ["p"], "chosen": ["a"], "rejected": [3]}, "rejected"),
])
def test_bad_datasets_are_refused_naming_the_column(tmp_path, rows, column):
    path = _write(tmp_path / "bad.parquet", rows)
    with pytest.raises(ValueError, match=f"'{column}'"):
        read_preferences(path)
    job = DPOJob(name="bad", policy=POLICY, data=path, out_dir=str(tmp_path / "out"))
    with pytest.raises(ValueError, match=f"'{column}'"):
        fit_dpo(job)  # before any Ray worker starts


def test_empty_dataset_and_bad_config_are_refused(tmp_path):
    empty = pa.table({c: pa.array([], pa.string()) for c in D.PREF_COLUMNS})
    pq.write_table(empty, tmp_path / "empty.parquet")
    with pytest.raises(ValueError, match="no rows"):
        read_preferences(tmp_path / "empty.parquet")
    for field, value in (("epsilon", 0.5), ("epsilon", -0.1), ("beta", 0.0), ("engine", "fsdp"), ("zero_stage", 4),
                         ("precision", "fp16"), ("micro_batch", 0)):
        with pytest.raises(ValueError, match=field):
            DPOConfig(**{field: value})
    with pytest.raises(ValueError, match="offload"):
        DPOConfig(engine="torch", offload=True)


# ----------------------------------------------------------------------------- training


def _pairs(n: int = 16) -> dict:
    """A consistent preference (a long affirmative answer over a curt refusal) that a tiny model can learn."""
    return {"prompt": [f"Question {i}: is {i} a number?\nAnswer:" for i in range(n)],
            "chosen": [" Yes, that is right."] * n, "rejected": [" No."] * n, "score_chosen": [1.0] * n}


def test_fit_dpo_local_cdpo(tmp_path):
    job = DPOJob(name="local", policy=POLICY, data=_write(tmp_path / "p.parquet", _pairs(8)), out_dir=str(tmp_path),
                 config=DPOConfig(beta=0.5, epsilon=0.1, lr=1e-3, max_steps=3, micro_batch=2, engine="torch"))
    summary = fit_dpo_local(job, log=lambda m: None)
    losses = [h["loss"] for h in read_history(tmp_path)]
    assert len(losses) == 3 and losses[0] == pytest.approx(math.log(2), abs=1e-5)  # policy == reference
    assert losses[-1] < losses[0] - 0.05
    assert (Path(summary["model_dir"]) / "model.safetensors").is_file()


@pytest.fixture(scope="module")
def ray_run(ray_cluster, tmp_path_factory):
    d = tmp_path_factory.mktemp("dpo_ray")
    job = DPOJob(name="dpo_z2", policy=POLICY, data=_write(d / "pairs.parquet", _pairs()), out_dir=str(d / "dpo"),
                 config=DPOConfig(beta=0.5, lr=1e-3, max_steps=6, micro_batch=2, num_workers=2,
                                  cpus_per_worker=0.5, engine="deepspeed", zero_stage=2, checkpoint_every=3,
                                  max_length=64))
    summary = run_dpo_stage(job, log=lambda m: None)
    return job, summary, read_history(job.out_dir)


def test_dpo_two_workers_deepspeed_zero2(ray_run):
    job, summary, hist = ray_run
    losses = [h["loss"] for h in hist]
    assert [h["step"] for h in hist] == list(range(1, 7))
    assert losses[0] == pytest.approx(math.log(2), abs=1e-5)  # h = 0 before the first update
    assert losses[-1] < losses[0] - 0.1  # the loss falls
    assert hist[-1]["rewards/margins"] > 0.2 and hist[-1]["rewards/accuracies"] == 1.0
    # parameters moved away from the reference (= the starting policy)
    init = load_model(POLICY)[0].state_dict()
    trained = load_file(str(Path(summary["model_dir"]) / "model.safetensors"))
    assert max((trained[k] - init[k]).abs().max().item() for k in trained) > 1e-3
    # the saved directory loads, and by hand its DPO loss on the training pairs is below log 2
    model_dir = summary["model_dir"]
    rows = _pairs()
    pc, pr = (_seq_logps(model_dir, rows["prompt"][:4], rows[c][:4]) for c in ("chosen", "rejected"))
    rc, rr = (_seq_logps(POLICY, rows["prompt"][:4], rows[c][:4]) for c in ("chosen", "rejected"))
    assert cdpo_loss(pc, pr, rc, rr, 0.5).item() < math.log(2) - 0.1
    # checkpoints were reported to Ray Train (HF Trainer's folder, DeepSpeed shards of both ranks)
    ckpts = list(Path(job.out_dir, "ray_train").glob("*/checkpoint_*/trainer_state.json"))
    assert ckpts and all(len(list(c.parent.glob("global_step*/zero_pp_rank_*_optim_states.pt"))) == 2 for c in ckpts)
    assert json.loads(Path(job.out_dir, "_SUCCESS.json").read_text())["fingerprint"] == summary["fingerprint"]


def test_stage_skips_when_complete_and_refuses_another_config(ray_run, monkeypatch, tmp_path):
    job, summary, _ = ray_run

    def no_training(*a, **k):
        raise AssertionError("a complete stage must not train again")

    monkeypatch.setattr(D, "fit_dpo", no_training)
    assert run_dpo_stage(job, log=lambda m: None) == summary
    with pytest.raises(RuntimeError, match="another config"):
        run_dpo_stage(replace(job, config=replace(job.config, epsilon=0.1)), log=lambda m: None)
    with pytest.raises(RuntimeError, match="another config"):
        run_dpo_stage(replace(job, ref=REF), log=lambda m: None)
    other = _pairs()
    other["chosen"][0] = " Yes."
    with pytest.raises(RuntimeError, match="another config"):
        run_dpo_stage(replace(job, data=_write(tmp_path / "other.parquet", other)), log=lambda m: None)


def test_rerun_resumes_from_ray_train_checkpoint(ray_run):
    """Runs last (it extends the module's run): the same job with more steps restores Ray Train's
    latest checkpoint (step 6) and trains steps 7-8 only; the first 6 history rows are kept as written."""
    job, _, hist = ray_run
    longer = replace(job, config=replace(job.config, max_steps=8))
    fit_dpo(longer, log=lambda m: None)
    hist2 = read_history(job.out_dir)
    assert [h["step"] for h in hist2] == list(range(1, 9))
    assert hist2[:6] == hist  # not retrained: rows (with their timings) untouched
    assert hist2[-1]["loss"] < hist[0]["loss"]
