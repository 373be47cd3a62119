"""Joint decoding (seed 003 section 4.1, Eq. 6) against values worked out by hand, and beam search
on a tiny model."""

import json
import math

import pytest

from pipelines import joint_decoding as J

LN = math.log


def test_candidates_deduplicated_by_text_keeping_proposers():
    beams = [[("a b", -1.0), ("c", -2.0), ("", -3.0)],
             [("c", -0.5), ("a b", -0.7), ("d", -0.9)]]
    assert J.candidates(beams) == [
        {"text": "a b", "proposed_by": [0, 1], "beam_logps": [-1.0, -0.7]},
        {"text": "c", "proposed_by": [0, 1], "beam_logps": [-2.0, -0.5]},
        {"text": "d", "proposed_by": [1], "beam_logps": [-0.9]},  # the empty beam is left out
    ]
    assert [c["text"] for c in J.candidates([["x", "y"], ["y", "x"]])] == ["x", "y"]


def test_eq6_weighted_sum_of_probabilities_by_hand():
    # P_0 = (0.5, 0.2, 0.1), P_1 = (0.1, 0.6, 0.3)
    logps = [[LN(0.5), LN(0.2), LN(0.1)], [LN(0.1), LN(0.6), LN(0.3)]]
    # lambda (0.7, 0.3): 0.35 + 0.03, 0.14 + 0.18, 0.07 + 0.09
    assert J.joint_scores(logps, [0.7, 0.3]) == pytest.approx([0.38, 0.32, 0.16])
    assert J.joint_log_scores(logps, [0.7, 0.3]) == pytest.approx([LN(0.38), LN(0.32), LN(0.16)])
    assert J.pick_target(J.joint_log_scores(logps, [0.7, 0.3])) == 0
    # lambda (0.3, 0.7): 0.15 + 0.07, 0.06 + 0.42, 0.03 + 0.21 -> the second candidate
    assert J.joint_scores(logps, [0.3, 0.7]) == pytest.approx([0.22, 0.48, 0.24])
    assert J.pick_target(J.joint_log_scores(logps, [0.3, 0.7])) == 1
    # lambda_1 = 0: model 1 drops out
    assert J.pick_target(J.joint_log_scores(logps, [1.0, 0.0])) == 0


def test_eq6_is_probability_not_log_probability():
    # P_0 = (0.9, 0.3), P_1 = (0.01, 0.3), equal weights. Eq. 6: 0.455 vs 0.3 -> candidate 0.
    # A weighted sum of log-probabilities would say 0.5 (ln 0.9 + ln 0.01) = -2.355 < ln 0.3 -> candidate 1.
    logps = [[LN(0.9), LN(0.3)], [LN(0.01), LN(0.3)]]
    assert J.joint_scores(logps, [0.5, 0.5]) == pytest.approx([0.455, 0.3])
    assert J.pick_target(J.joint_log_scores(logps, [0.5, 0.5])) == 0


def test_eq6_is_not_length_normalised_and_survives_underflow():
    # A: log P = -3 over 10 tokens, B: -2 over 2 tokens; per token A is better, Eq. 6 picks B (e^-2 > e^-3)
    def logprob(i, prompts, conts):
        return [{"A": (-3.0, 10), "B": (-2.0, 2)}[c] for c in conts]

    out = J.joint_decode(["p"], lambda i, ps: [[("A", 0.0), ("B", 0.0)]], logprob, [1.0], num_beams=2)
    assert out[0]["target"] == "B"
    # sequences so long that every exp(log P) is 0.0: the log-domain argmax still orders them
    logps = [[-2000.0, -1999.0], [-2001.0, -2005.0]]
    assert J.joint_scores(logps, [0.5, 0.5]) == [0.0, 0.0]
    assert J.pick_target(J.joint_log_scores(logps, [0.5, 0.5])) == 1


def test_bad_weights_refused():
    for bad in ([], [0.0, 0.0], [-1.0, 2.0], [float("nan")]):
        with pytest.raises(ValueError, match="weights"):
            J.joint_scores([[0.0]] * max(len(bad), 1), bad)


@pytest.fixture(scope="module")
def toks():
    from actors.registry import load_tokenizer

    return [load_tokenizer("tiny:llama"), load_tokenizer("tiny:gemma3")]


def test_joint_decode_across_tokenizers_by_hand(toks):
    """Two weak models, SmolLM2's and Gemma 3's tokenizers, each scoring every candidate from its text:
    log p of each of its tokens is ln 0.5, except the scripted ones below."""
    pieces = {t: [tok.convert_ids_to_tokens(tok(t, add_special_tokens=False)["input_ids"]) for tok in toks]
              for t in (" Zürich", " dataloader", " weatherproof", " Schwarzenegger", " hello")}
    assert pieces[" Zürich"] == [["ĠZ", "Ã¼", "rich"], ["▁Zürich"]]
    assert pieces[" dataloader"] == [["Ġdat", "aloader"], ["▁dat", "alo", "ader"]]
    assert pieces[" weatherproof"] == [["Ġweather", "proof"], ["▁weatherproof"]]
    assert pieces[" Schwarzenegger"] == [["ĠSchwarz", "ene", "gger"], ["▁Schwarzenegger"]]
    table = [{"proof": LN(0.45)}, {"▁weatherproof": LN(0.45)}]
    calls = {"beams": [], "logprob": []}

    def beams_fn(i, prompts):
        calls["beams"].append((i, list(prompts)))
        rows = {"Where?": [[" Zürich", " dataloader", " never"], [" dataloader", " weatherproof", " never"]],
                "Who?": [[" Schwarzenegger", " hello"], [" hello", " Schwarzenegger"]]}
        return [[(t, -1.0) for t in rows[p][i]] for p in prompts]

    def logprob_fn(i, prompts, conts):
        calls["logprob"].append((i, list(prompts), list(conts)))
        out = []
        for c in conts:
            ids = toks[i](c, add_special_tokens=False)["input_ids"]
            out.append((sum(table[i].get(t, LN(0.5)) for t in toks[i].convert_ids_to_tokens(ids)), len(ids)))
        return out

    out = J.joint_decode(["Where?", "Who?"], beams_fn, logprob_fn, [0.5, 0.5], num_beams=2)
    # one call per model for the whole batch; " never" is beam 3 > M = 2
    assert calls["beams"] == [(0, ["Where?", "Who?"]), (1, ["Where?", "Who?"])]
    want = [" Zürich", " dataloader", " weatherproof", " Schwarzenegger", " hello"]
    assert calls["logprob"] == [(i, ["Where?"] * 3 + ["Who?"] * 2, want) for i in (0, 1)]
    row = out[0]
    assert [c["text"] for c in row["candidates"]] == want[:3]
    assert [c["proposed_by"] for c in row["candidates"]] == [[0], [0, 1], [1]]
    assert [c["num_tokens"] for c in row["candidates"]] == [[3, 1], [2, 3], [2, 1]]
    # P_0 (SmolLM2 pieces) = (0.5^3, 0.5^2, 0.5 * 0.45) = (0.125, 0.25, 0.225) -> alone: dataloader
    # P_1 (Gemma pieces)   = (0.5, 0.5^3, 0.45)         = (0.5, 0.125, 0.45)   -> alone: Zürich
    # Eq. 6, lambda (0.5, 0.5): (0.3125, 0.1875, 0.3375) -> weatherproof, second for each model alone
    assert [c["score"] for c in row["candidates"]] == pytest.approx([0.3125, 0.1875, 0.3375])
    assert [math.exp(x) for c in row["candidates"] for x in c["logps"]] == pytest.approx(
        [0.125, 0.5, 0.25, 0.125, 0.225, 0.45])
    assert (row["target"], row["target_index"]) == (" weatherproof", 2)
    # row 2: P_0 = (0.125, 0.5), P_1 = (0.5, 0.5) -> (0.3125, 0.5): hello
    assert out[1]["target"] == " hello" and [c["proposed_by"] for c in out[1]["candidates"]] == [[0, 1], [0, 1]]
    json.dumps(out)  # JSON-serialisable for a Ray Data column
    # lambda (0.95, 0.05): Zürich 0.11875 + 0.025, dataloader 0.2375 + 0.00625, weatherproof 0.21375 + 0.0225
    out = J.joint_decode(["Where?"], beams_fn, logprob_fn, [0.95, 0.05], num_beams=2)
    assert [c["score"] for c in out[0]["candidates"]] == pytest.approx([0.14375, 0.24375, 0.23625])
    assert out[0]["target"] == " dataloader"


def test_joint_decode_clean_and_rows_without_candidates():
    def logprob(i, prompts, conts):
        return [-float(len(c)) for c in conts]  # bare log-probs are accepted too

    beams = {"a": [" xy ", "x"], "b": ["  ", ""]}
    out = J.joint_decode(["a", "b"], lambda i, ps: [beams[p] for p in ps], logprob, [1.0], num_beams=2,
                         clean=str.strip)
    assert [c["text"] for c in out[0]["candidates"]] == ["xy", "x"] and out[0]["target"] == "x"
    assert out[1] == {"target": None, "target_index": None, "candidates": []}
    assert out[0]["candidates"][0]["num_tokens"] == [None]


@pytest.fixture(scope="module")
def tiny_llama():
    from actors.backend import BackendConfig
    from actors.hf_backend import HFBackend

    return HFBackend("tiny:llama:1", BackendConfig(dtype="float32", threads=1))


PROMPTS = ["The capital of France is", "Hi"]  # different lengths: the short one is left-padded


def test_beam_search_one_step_is_the_top_m_next_tokens(tiny_llama):
    import torch

    got = tiny_llama.beam_search(PROMPTS, num_beams=3, max_new_tokens=1)
    for prompt, beams in zip(PROMPTS, got):
        ids = torch.tensor([tiny_llama.tok(prompt)["input_ids"]])
        with torch.inference_mode():
            logp = tiny_llama.model(input_ids=ids).logits[0, -1].float().log_softmax(-1)
        top = logp.topk(3)
        assert [s for _, s in beams] == pytest.approx(top.values.tolist(), abs=1e-4)
        assert [t for t, _ in beams] == [tiny_llama.tok.decode([i]) for i in top.indices.tolist()]
    # one beam is greedy decoding
    (text, score), = tiny_llama.beam_search(PROMPTS[:1], num_beams=1, max_new_tokens=3)[0]
    (g_text, g_score), = tiny_llama.generate(PROMPTS[:1], max_new_tokens=3)[0]
    assert (text, score) == (g_text, pytest.approx(g_score, abs=1e-4))


def test_beam_search_scores_are_the_teacher_forced_logprobs_of_the_texts(tiny_llama):
    """The returned score of each beam equals sequence_logprobs of its text. This compares through
    the text, so it needs the text to re-tokenize to the generated ids: checked as a round trip
    below (it holds for these beams, not for all: three generated "\n" tokens come back as one "\n\n\n"
    token, scored differently). A beam ending in the end token also counts log p(end), as `generate`."""
    got = tiny_llama.beam_search(PROMPTS, num_beams=3, max_new_tokens=4)
    for prompt, beams in zip(PROMPTS, got):
        assert len(beams) == 3 and len({t for t, _ in beams}) == 3
        scores = [s for _, s in beams]
        assert scores == sorted(scores, reverse=True)
        for text, score in beams:
            ids = tiny_llama.tok(text, add_special_tokens=False)["input_ids"]
            assert len(ids) == 4 and tiny_llama.tok.decode(ids) == text
            (lp, n), = tiny_llama.sequence_logprobs([prompt], [text])
            assert (lp, n) == (pytest.approx(score, abs=1e-3), 4)
