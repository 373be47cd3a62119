"""Ray Train + DeepSpeed fine-tuning on tiny models: losses fall, parameters change, ZeRO-2/3 and
two data-parallel torch workers agree with one process, a killed worker resumes from its checkpoint onto the uninterrupted trajectory."""

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from actors.registry import load_model
from conftest import live_actors
from pipelines.data import DataConfig, read_source, split_rows
from actors.prompts import TemplateConfig
from training.examples import ground_truth_examples
from training.sft_config import TrainConfig
from training.sft_trainer import TrainJob, fit, fit_local, read_history


@pytest.fixture(scope="module")
def examples():
    cfg = DataConfig(source="embedded:mmlu", weak_train=32, held_out=0, test=0)
    return ground_truth_examples(split_rows(read_source(cfg), cfg)["weak_train"], TemplateConfig())


def _job(tmp, examples, **train):
    base = dict(lr=1e-3, max_steps=6, micro_batch=4, max_length=128, checkpoint_every=3)
    base.update(train)
    return TrainJob(name=Path(tmp).name, spec="tiny:llama:1", out_dir=str(tmp), train=TrainConfig(**base),
                    examples=examples, num_options=4)


@pytest.fixture(scope="module")
def reference(examples, tmp_path_factory):
    """One process, plain torch AdamW, global batch 8 (4 x 2 accumulation)."""
    d = tmp_path_factory.mktemp("ref")
    fit_local(_job(d, examples, engine="torch", grad_accum=2), lambda m: None)
    return [h["loss"] for h in read_history(d)]


def _param_delta(model_dir):
    init, _ = load_model("tiny:llama:1")
    trained = load_file(str(Path(model_dir) / "model.safetensors"))
    name = "model.layers.0.mlp.down_proj.weight"
    return (trained[name].float() - init.state_dict()[name]).abs().max().item()


def test_ray_gets_reports_at_checkpoints_and_the_end_not_every_step(examples, tmp_path):
    # Ray Train V2's report queue holds one result until the controller's next poll (2 s): a report
    # per step would hold every step to 2 s. 6 fast steps: the checkpoints (3, 6) only.
    from training.sft_trainer import REPORT_EVERY_S, train_loop

    calls = []
    t0 = time.time()
    train_loop(_job(tmp_path, examples, engine="torch"), 0, 1, None,
               lambda m, d: calls.append((m["step"], d is not None)))
    assert time.time() - t0 < REPORT_EVERY_S  # else a timed report is due and the list differs
    assert calls == [(3, True), (6, True)]
    assert [h["step"] for h in read_history(tmp_path)] == [1, 2, 3, 4, 5, 6]  # every step still logged


@pytest.mark.parametrize("engine,zero", [("deepspeed", 2), ("deepspeed", 3), ("torch", 0)])
def test_two_workers_data_parallel(ray_cluster, examples, reference, tmp_path, engine, zero):
    # engine torch: the workers' gradients are averaged before each optimizer step (without it each
    # worker trained its own copy on its own rows and the trajectory left the reference's)
    job = _job(tmp_path / f"{engine}{zero}", examples, num_workers=2, cpus_per_worker=0.5, engine=engine,
               zero_stage=zero)
    summary = fit(job, lambda m: None)
    losses = [h["loss"] for h in read_history(job.out_dir)]
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.1  # the loss falls
    # 2 workers x micro-batch 4 = the reference's 4 x 2 accumulation: same trajectory
    assert losses == pytest.approx(reference, abs=2e-3)
    assert _param_delta(summary["model_dir"]) > 1e-4  # parameters changed (ZeRO-3: gathered on save)


def test_worker_killed_resumes_onto_the_same_trajectory(ray_cluster, examples, tmp_path):
    uninterrupted = tmp_path / "full"
    fit(_job(uninterrupted, examples, num_workers=2, cpus_per_worker=0.5, max_steps=9), lambda m: None)
    expected = [h["loss"] for h in read_history(uninterrupted)]

    job = _job(tmp_path / "killed", examples, num_workers=2, cpus_per_worker=0.5, max_steps=9)
    seen = {}

    def killer():
        deadline = time.time() + 300
        ckpts = Path(job.out_dir) / "ray_train"
        while time.time() < deadline and not list(ckpts.glob("**/checkpoint_*/w2s_step.json")):
            time.sleep(0.05)
        seen["steps_at_kill"] = len(read_history(job.out_dir))
        os.kill(live_actors("RayTrainWorker")[0]["Pid"], signal.SIGKILL)

    th = threading.Thread(target=killer)
    th.start()
    fit(job, lambda m: None)
    th.join()
    assert 3 <= seen["steps_at_kill"] < 9, seen
    losses = [h["loss"] for h in read_history(job.out_dir)]
    assert losses == pytest.approx(expected, abs=1e-5)  # steps 4.. re-run from the step-3 checkpoint


def test_driver_restart_resumes_from_ray_train_checkpoint(ray_cluster, examples, tmp_path):
    """A job stopped after step 3 (its driver gone) and started again continues at step 4 on the
    uninterrupted trajectory (constant LR, so the 3-step and 6-step runs share their first steps)."""
    full = _job(tmp_path / "full", examples, engine="torch", lr_schedule="constant", checkpoint_every=0)
    fit_local(full, lambda m: None)
    expected = [h["loss"] for h in read_history(full.out_dir)]
    first = _job(tmp_path / "run", examples, engine="torch", lr_schedule="constant", max_steps=3, checkpoint_every=0)
    fit(first, lambda m: None)
    logs = []
    fit(_job(tmp_path / "run", examples, engine="torch", lr_schedule="constant", checkpoint_every=0), logs.append)
    assert "resuming" in logs[0]
    hist = read_history(first.out_dir)
    assert [h["step"] for h in hist] == [1, 2, 3, 4, 5, 6]
    assert [h["loss"] for h in hist] == pytest.approx(expected, abs=2e-3)


def test_local_resume_takes_the_next_batch(examples, tmp_path):
    job = _job(tmp_path, examples, engine="torch")
    fit_local(job, lambda m: None)
    full = read_history(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "checkpoints" / "step_000006")  # as if it died after step 5
    shutil.rmtree(tmp_path / "model")
    fit_local(job, lambda m: None)
    again = read_history(tmp_path)
    assert [h["step"] for h in again] == [1, 2, 3, 4, 5, 6]
    assert [h["loss"] for h in again] == pytest.approx([h["loss"] for h in full], abs=1e-6)


def test_classifier_head_trains(examples, tmp_path):
    job = _job(tmp_path, examples, engine="torch", head="classifier", lr=3e-3, max_steps=8)
    summary = fit_local(job, lambda m: None)
    losses = [h["loss"] for h in read_history(tmp_path)]
    assert losses[0] == pytest.approx(torch.log(torch.tensor(4.0)).item(), abs=0.2)  # ~uniform over K = 4
    assert losses[-1] < losses[0]
    model, _ = load_model(summary["model_dir"], head="classifier", num_labels=4)
    assert model.score.out_features == 4
    # the trained classifier scores through the backend's classifier head (evaluation path)
    from actors.backend import BackendConfig
    from actors.hf_backend import HFBackend

    b = HFBackend(summary["model_dir"], BackendConfig(head="classifier", dtype="float32"))
    ex = examples[0]
    p = b.score_options([ex["text"]], [ex["labels"]])[0]
    with torch.no_grad():
        ids = b.tok(ex["text"], return_tensors="pt").input_ids
        ref = torch.softmax(model(ids).logits[0].float(), -1).numpy()
    assert p == pytest.approx(ref, abs=1e-5) and len(p) == 4


def _weak_rows():
    return [
        {"id": "a", "prompt": "Q1", "options": ["x", "y"], "label": 0, "probs_m1": [0.9, 0.1], "probs_m2": [0.4, 0.6],
         "weak_probs": [0.65, 0.35], "weak_label": 0, "perms": [[0, 1], [1, 0]], "answers": [0, 0, 1, 1],
         "reliability": [0.5, 0.5, 0.5, 0.5], "kept": False},
        {"id": "b", "prompt": "Q2", "options": ["x", "y"], "label": 1, "probs_m1": [0.2, 0.8], "probs_m2": [0.3, 0.7],
         "weak_probs": [0.25, 0.75], "weak_label": 1, "perms": [[0, 1], [1, 0]], "answers": [1, 1, 1, 0],
         "reliability": [0.62, 0.62, 0.62, 0.38], "kept": True},
    ]


def weak_label_examples(rows, method, template):
    """A registered method's examples (pipelines/methods), the columns of `rows` naming the weak models."""
    from types import SimpleNamespace

    from pipelines import methods

    return methods.method(method).examples(rows, SimpleNamespace(template=template))


def test_weak_label_examples_per_method():
    t = TemplateConfig()
    ens = weak_label_examples(_weak_rows(), "ensemble", t)
    assert [e["weak_labels"] for e in ens] == [[0, 1], [1, 1]] and ens[0]["target"] == 0
    assert ens[1]["weak_probs"] == [[0.2, 0.8], [0.3, 0.7]] and ens[1]["soft"] == [0.25, 0.75]
    filt = weak_label_examples(_weak_rows(), "rel_filter", t)
    # only row b is kept; its 4 (model, order) answers become 4 examples. Answer 1 shown in order
    # (1, 0) sits at position 0 -> target 0 with text listing "A. y" first.
    assert [e["id"] for e in filt] == ["b"] * 4
    assert [e["target"] for e in filt] == [1, 0, 1, 1]
    assert filt[1]["text"].startswith("Q2\nA. y\nB. x")
    rew = weak_label_examples(_weak_rows(), "rel_reweight", t)
    assert len(rew) == 8 and [e["weight"] for e in rew[4:]] == [0.62, 0.62, 0.62, 0.38]
    with pytest.raises(ValueError, match="unknown method"):
        weak_label_examples(_weak_rows(), "vote", t)


def test_text_answers_train_on_option_likelihood(examples, tmp_path):
    """template.answer=text: each option's mean continuation log-prob is its score (seed 001 Eq. 1)."""
    from actors.prompts import TemplateConfig
    from training.sft_trainer import collate, option_scores

    rows = [{"id": "q", "prompt": "Sky colour?", "options": ["blue", "green sea"], "label": 0}]
    tmpl = TemplateConfig(template="Q: {prompt}\nA:", answer="text")
    ex = ground_truth_examples(rows, tmpl)
    job = TrainJob(name="t", spec="tiny:llama:3", out_dir=str(tmp_path), answer="text", examples=ex, num_options=2,
                   train=TrainConfig(engine="torch", max_steps=1, micro_batch=1, lm_normalize="vocab"))
    model, tok = load_model("tiny:llama:3")
    batch = collate(ex, tok, {}, job, "cpu")
    logp, _ = option_scores(model, batch, "lm", "vocab")
    with torch.no_grad():  # by hand: mean log p of each option's tokens after the prompt
        for k, opt in enumerate(["blue", "green sea"]):
            p = tok("Q: Sky colour?\nA:").input_ids
            c = tok(" " + opt, add_special_tokens=False).input_ids
            lp = torch.log_softmax(model(torch.tensor([p + c])).logits[0].float(), -1)
            manual = sum(lp[len(p) - 1 + j, t].item() for j, t in enumerate(c)) / len(c)
            assert logp[0, k].item() == pytest.approx(manual, abs=1e-4)
    summary = fit_local(TrainJob(name="t2", spec="tiny:llama:3", out_dir=str(tmp_path / "fit"), answer="text",
                                 examples=ex * 8, num_options=2,
                                 train=TrainConfig(engine="torch", lr=1e-3, max_steps=4, micro_batch=4)), lambda m: None)
    assert summary["final_loss"] < summary["first_loss"]


def test_zero_offload_trains_in_one_process(examples, tmp_path):
    """ZeRO-Offload (optimizer state on the CPU, DeepSpeed's own AdamW from the config)."""
    job = _job(tmp_path, examples, engine="deepspeed", zero_stage=3, offload=True, max_steps=4, grad_accum=2,
               checkpoint_every=0)
    summary = fit_local(job, lambda m: None)
    losses = [h["loss"] for h in read_history(tmp_path)]
    assert len(losses) == 4 and losses[-1] < losses[0] - 0.1
    assert _param_delta(summary["model_dir"]) > 1e-4


def test_bradley_terry_reward_head_learns_weak_preferences(tmp_path):
    """The scalar reward head on weakly labelled pairs: the first step's loss is the BT loss of the
    untrained head, computed here independently; after training the chosen responses score higher."""
    from training import losses as L
    from training.examples import reward_examples

    cfg = DataConfig(source="embedded:piqa_pairs", weak_train=8, held_out=0, test=0)
    rows = split_rows(read_source(cfg), cfg)["weak_train"]
    rows = [{**r, "weak_label": 1 - r["label"], "weak_conf": 0.5 + 0.05 * i} for i, r in enumerate(rows)]
    ex = reward_examples(rows, "{prompt}\nAnswer: {response}", "weak", "confidence")
    assert [e["weight"] for e in ex] == pytest.approx([0.5 + 0.05 * i for i in range(8)])
    job = TrainJob(name="rm", spec="tiny:llama:3", out_dir=str(tmp_path), method="reward", examples=ex,
                   train=TrainConfig(head="reward", engine="torch", lr=2e-3, max_steps=8, micro_batch=8,
                                     max_length=96, lr_schedule="constant", checkpoint_at_end=False))
    model, tok = load_model("tiny:llama:3", "classifier", num_labels=1)
    from actors.backend import encode_prompts
    from training.sft_trainer import _left_pad

    def rewards(m):
        batch = _left_pad(encode_prompts(tok, [t for e in ex for t in e["texts"]], False, 96), tok.pad_token_id)
        with torch.no_grad():
            return m(**batch).logits[:, 0].view(-1, 2)

    r0 = rewards(model)
    t = torch.tensor([e["target"] for e in ex])
    expected = L.bradley_terry_loss(r0.gather(1, t[:, None])[:, 0], r0.gather(1, 1 - t[:, None])[:, 0],
                                    torch.tensor([e["weight"] for e in ex]))
    fit_local(job, lambda m: None)
    hist = read_history(tmp_path)
    assert hist[0]["loss"] == pytest.approx(expected.item(), abs=2e-2)  # bf16 autocast on the first forward
    assert hist[-1]["loss"] < hist[0]["loss"]
    trained, _ = load_model(str(tmp_path / "model"), "classifier")
    r1 = rewards(trained)
    margin = lambda r: (r.gather(1, t[:, None]) - r.gather(1, 1 - t[:, None])).mean().item()  # noqa: E731
    assert margin(r1) > margin(r0) + 0.1


def _average_in_rank(rank: int, store_path: str, out: str) -> None:
    import torch.distributed as dist

    from training.sft_trainer import average_gradients

    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=2)
    params = [torch.nn.Parameter(torch.zeros(n)) for n in (3, 5, 2)] + [torch.nn.Parameter(torch.zeros(4))]
    for i, p in enumerate(params[:3]):
        p.grad = torch.full_like(p, float(rank + 1 + 10 * i))  # rank 0: 1, 11, 21; rank 1: 2, 12, 22
    average_gradients(params, 2, bucket_numel=4)  # buckets [3, 5] and [2]: a boundary inside the list
    torch.save([p.grad for p in params], f"{out}.{rank}")
    dist.destroy_process_group()


def test_average_gradients_across_two_ranks_in_buckets(tmp_path):
    torch.multiprocessing.spawn(_average_in_rank, args=(str(tmp_path / "store"), str(tmp_path / "g")), nprocs=2)
    for rank in (0, 1):
        g = torch.load(tmp_path / f"g.{rank}")
        assert [x.tolist() for x in g[:3]] == [[1.5] * 3, [11.5] * 5, [21.5] * 2]  # (r0 + r1) / 2
        assert g[3] is None  # a parameter without a gradient stays without one
