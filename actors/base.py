"""What every model-role actor shares: a backend, a readiness report, batched scoring calls."""

from __future__ import annotations

import os

from actors.backend import BackendConfig, ModelBackend


def make_backend(spec: str, cfg: BackendConfig) -> ModelBackend:
    """The backend `cfg.kind` names over model `spec` (HF by default; vLLM only when asked for,
    since it is an optional extra; the simulated backend for `sim:` specs)."""
    if spec.startswith("sim:"):
        from actors.sim_backend import SimBackend

        return SimBackend(spec, cfg)
    if cfg.kind == "vllm":
        from actors.vllm_backend import VLLMBackend

        return VLLMBackend(spec, cfg)
    from actors.hf_backend import HFBackend

    return HFBackend(spec, cfg)


class BackendActor:
    """Holds one model backend inside a Ray actor. Roles subclass it with their own methods."""

    role = "model"

    def __init__(self, name: str, spec: str, backend: BackendConfig):
        self.name = name
        self.backend = make_backend(spec, backend)

    def ready(self) -> dict:
        import ray

        return {"role": self.role, "name": self.name, "pid": os.getpid(),
                "node_id": ray.get_runtime_context().get_node_id(), "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), **self.backend.info()}

    def score_options(self, texts: list[str], labels: list[list[str]], chat: bool = False, answer: str = "label"):
        """Option probabilities: one label token per option (answer=label) or the options' texts (text)."""
        if answer == "text":
            return self.backend.score_texts(texts, labels, chat)
        return self.backend.score_options(texts, labels, chat)

    def sequence_logprobs(self, prompts: list[str], continuations: list[str], chat: bool = False):
        return self.backend.sequence_logprobs(prompts, continuations, chat)

    def token_logprobs(self, prompts: list[str], continuations: list[str], chat: bool = False):
        return self.backend.token_logprobs(prompts, continuations, chat)

    def generate(self, prompts: list[str], num_samples: int = 1, max_new_tokens: int = 64,
                 temperature: float = 0.0, seed: int = 0, chat: bool = False, stop: list[str] | None = None):
        """ModelBackend.generate (stop: end each text before the first stop string; None: no stops)."""
        return self.backend.generate(prompts, num_samples, max_new_tokens, temperature, seed, chat, stop=stop)

    def sample_chunks(self, prompts: list[str], partials: list[str], num_samples: int, max_tokens: list[int],
                      temperature: float = 0.7, top_k: int = 0, seed: int = 0, chat: bool = False,
                      stop: list[str] | None = None):
        """ModelBackend.sample_chunks: the successor chunks of weak-to-strong search."""
        return self.backend.sample_chunks(prompts, partials, num_samples, max_tokens, temperature, top_k, seed,
                                          chat, stop=stop)

    def response_logprobs(self, prompts: list[str], responses: list[str], finished: list[bool],
                          chat: bool = False) -> list[float]:
        """log p(response | prompt) by teacher forcing, with the model's end token after each
        finished response (weak-to-strong search scores a finished hypothesis with its end); an
        empty unfinished response scores 0."""
        end = self.backend.end_text()
        conts = [r + end if f else r for r, f in zip(responses, finished)]
        keep = [i for i, c in enumerate(conts) if c]
        out = [0.0] * len(conts)
        if keep:
            scored = self.backend.sequence_logprobs([prompts[i] for i in keep], [conts[i] for i in keep], chat)
            for i, (lp, _) in zip(keep, scored):
                out[i] = float(lp)
        return out

    def beam_search(self, prompts: list[str], num_beams: int, max_new_tokens: int = 64, chat: bool = False):
        return self.backend.beam_search(prompts, num_beams, max_new_tokens, chat)

    def tokens_seen(self) -> int:
        return getattr(self.backend, "tokens_seen", 0)

    def counted(self, method: str, *args, **kwargs) -> tuple:
        """(the result of self.<method>(...), tokens it ran through the model). Exact: an actor
        runs one call at a time, so the counter moves only for this call."""
        before = self.tokens_seen()
        result = getattr(self, method)(*args, **kwargs)
        return result, self.tokens_seen() - before
