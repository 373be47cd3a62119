"""SEAM's Consultancy and Debate protocols (pipelines/debate.py) with scripted speakers, and both
in the SEAM stage on tiny real models (the weak judge's probabilities checked by direct scoring)."""

import json

import numpy as np
import pytest

from pipelines import debate, seam

PRINCIPLES = [("Informative", "accurate"), ("Logical", "coherent")]
ROWS = [{"id": "r1", "prompt": "Goal: boil water", "options": ["use a pot", "use a sieve"]},
        {"id": "r2", "prompt": "Goal: cut paper", "options": ["scissors", "a spoon"]}]


class Speaker:
    """Answers each prompt with the side it was asked to defend and the turn number."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def __call__(self, texts):
        self.calls.append(list(texts))
        return [f" I hold {t.rsplit('Debater ', 1)[1][0] if 'Debater ' in t else t.rsplit('Response ', 1)[1][0]}"
                f" (call {len(self.calls)})" for t in texts]


def test_the_debate_alternates_sides_and_each_speech_sees_the_transcript():
    sp = Speaker()
    out = debate.debate(ROWS, sp, PRINCIPLES, rounds=2)
    assert len(sp.calls) == 4 and all(len(c) == 2 for c in sp.calls)  # one batched call per speech
    for r in out:
        assert [s["side"] for s in r["speeches"]] == [0, 1, 0, 1]
        assert [s["text"] for s in r["speeches"]] == ["I hold A (call 1)", "I hold B (call 2)", "I hold A (call 3)",
                                                      "I hold B (call 4)"]
        assert r["knowledge"].splitlines()[1] == "Debater A (for Response A): I hold A (call 1)"
    # the third speech's prompt holds the first two speeches, in order, and the principles
    third = sp.calls[2][0]
    assert third.index("I hold A (call 1)") < third.index("I hold B (call 2)") and "- Logical: coherent" in third
    assert "(call 3)" not in third
    with pytest.raises(ValueError, match="two debaters defend two"):
        debate.debate([{"id": "x", "prompt": "p", "options": ["a", "b", "c"]}], sp, PRINCIPLES, 1)


def test_consultancy_assigns_a_stable_side_independent_of_the_label():
    sp = Speaker()
    out = debate.consult(ROWS, sp, PRINCIPLES)
    assert len(sp.calls) == 1
    for r, o in zip(ROWS, out):
        assert o["side"] == debate.assigned_side(f"{r['id']}\x1f{r['prompt']}")
        assert o["argument"] == f"I hold {'AB'[o['side']]} (call 1)"
        assert o["knowledge"].startswith(f"A consultant argues for Response {'AB'[o['side']]}:")
    sides = [debate.assigned_side(f"row-{i}") for i in range(400)]
    assert 0.4 < np.mean(sides) < 0.6  # about half the consultants defend each response


def test_the_weak_verdict_is_the_more_probable_response():
    assert debate.verdict([0.3, 0.7]) == 1 and debate.verdict([0.5, 0.5]) == 0 and debate.verdict([0.9, 0.1]) == 0


def test_config_refuses_unknown_protocols():
    with pytest.raises(ValueError, match="protocols"):
        seam.SeamConfig(protocols=["jury"])
    with pytest.raises(ValueError, match="debate_turns"):
        seam.SeamConfig(debate_turns=0)


def test_both_protocols_in_the_seam_stage(ray_cluster, tmp_path):
    from actors.backend import BackendConfig
    from actors.hf_backend import HFBackend
    from actors.model_config import ModelConfig
    from actors.prompts import TemplateConfig, render
    from cluster.config import ClusterConfig
    from pipelines.data import DataConfig, prepare_data
    from pipelines.seam_annotate import SeamStageConfig, read_seam_labels, seam_stage, table2_markdown

    backend = BackendConfig(dtype="float32", max_length=512, max_batch_tokens=4096)
    template = TemplateConfig(template="{prompt}\nSolutions: {options}\nAnswer:", option_line="{option}",
                              option_sep=" | ", answer="text")
    prepare_data(DataConfig(source="embedded:piqa_pairs", weak_train=0, held_out=4, test=0, shard_rows=4,
                            max_prompt_chars=150), tmp_path / "data", lambda m: None)
    cfg = seam.SeamConfig(max_depth=1, thought_max_new_tokens=3, protocols=["consultancy", "debate"], debate_turns=1,
                          argument_max_new_tokens=4)
    summary = seam_stage(tmp_path / "data" / "held_out", tmp_path / "out", cfg, "tiny:llama:7", backend,
                         ModelConfig(spec="tiny:llama:1", name="weak", backend=backend), template,
                         ClusterConfig(num_cpus=2, cpus_per_actor=0.25), lambda m: None,
                         SeamStageConfig(batch_rows=4, max_in_flight=1))
    rows = read_seam_labels(tmp_path / "out").to_pylist()
    weak = HFBackend("tiny:llama:1", backend)
    r = rows[0]
    assert r["consultancy_side"] == debate.assigned_side(f"{r['id']}\x1f{r['prompt']}")
    knowledge = f"A consultant argues for Response {'AB'[r['consultancy_side']]}: {r['consultancy_argument']}"
    text, labels = render(seam.with_knowledge(r["prompt"], knowledge, cfg), r["options"], range(2), template)
    assert r["consultancy_probs"] == pytest.approx(weak.score_texts([text], [labels])[0].tolist(), abs=1e-5)
    speeches = json.loads(r["debate_transcript"])
    assert [s["side"] for s in speeches] == [0, 1]
    assert r["debate_label"] == int(np.argmax(r["debate_probs"]))
    t2 = summary["table2"]
    y = np.array([x["label"] for x in rows])
    for m in ("consultancy", "debate"):
        assert t2[m]["accuracy"] == pytest.approx(np.mean([x[f"{m}_label"] for x in rows] == y))
    md = table2_markdown(t2)
    assert "| Consultancy |" in md and "| Debate |" in md
