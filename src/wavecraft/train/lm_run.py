"""``wavecraft train lm CONFIG.yaml``: from a manifest and a frozen codec to a MusicGen checkpoint.

The run builds (or, for fine-tuning, loads with ``init_from``) an LM with its conditioners — a text conditioner
(MiniLM sentence encoder or T5) and optionally the chroma melody conditioner —, turns the manifest into codes with
the frozen codec, trains with :class:`~.lm_solver.LMSolver` (resumable, DDP under torchrun), writes audio samples
now and then, and exports ``output_dir/final`` with ``save_pretrained``'s layout, which
``MusicGen.get_pretrained(path)`` loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..checkpoints.lm import LMBundle, load_lm_bundle, save_generator
from ..codec.compression import CompressionModel
from ..conditioning import ConditionFuser, SentenceConditioner, T5Conditioner
from ..conditioning.chroma import ChromaConditioner
from ..errors import WavecraftError
from ..lm.config import LMConfig
from ..lm.model import LMModel
from .checkpoint import non_finite
from .config import LMTrainConfig
from .distributed import barrier, init_from_env, is_main
from .lm_conditions import ConditionProjector
from .lm_solver import LMSolver

FINAL_DIR = "final"
TEXT_ENCODERS = ("sentence", "t5", "none")
CODE_MODES = ("memory", "disk", "on_the_fly")


def _small_lm() -> LMConfig:
    # n_q, card and delays are taken from the codec when the model is built.
    return LMConfig(dim=256, num_heads=4, num_layers=4, card=1024, n_q=4)


@dataclass(frozen=True)
class LMRunConfig:
    """Everything ``wavecraft train lm`` needs. ``train`` holds the optimisation (and ``train.output_dir``)."""

    manifest: str = ""
    codec: str = ""  # codec checkpoint (folder, file or hub name); default: the one next to init_from
    init_from: str = ""  # fine-tune from this MusicGen checkpoint instead of building a new LM
    lm: LMConfig = field(default_factory=_small_lm)
    text_encoder: str = "sentence"  # sentence (MiniLM, ships with wavecraft) | t5 | none
    text_encoder_name: str = ""  # default: all-MiniLM-L6-v2 / t5-base; a local folder works offline
    text_pooling: str = "mean"  # sentence encoder: one pooled token (mean) or every token (tokens)
    fuse: str = "cross"  # how the text enters the LM: cross-attention or prepended
    melody: bool = False  # add the chroma melody conditioner
    melody_fuse: str = "prepend"  # prepend (as musicgen-melody) | sum (per codec frame; with init_from: converts)
    segment_duration: float = 10.0  # training clips; also the exported model's max_duration
    codes: str = "memory"  # memory: files encoded once | disk: same, cached in output_dir/codes | on_the_fly
    on_bad_file: str = "skip"  # a missing / undecodable file: skip it (reported with its line) or stop
    cfg_coef: float = 3.0  # the exported model's default guidance
    sample_every: int = 0  # write audio samples every N steps (0: never)
    sample_prompts: tuple[str, ...] = ("a gentle piano waltz", "fast rock drums with a bass line")
    sample_duration: float = 4.0
    train: LMTrainConfig = field(default_factory=LMTrainConfig)

    def __post_init__(self) -> None:
        for name, value, options in (("text_encoder", self.text_encoder, TEXT_ENCODERS),
                                     ("codes", self.codes, CODE_MODES), ("on_bad_file", self.on_bad_file,
                                                                         ("skip", "stop")),
                                     ("fuse", self.fuse, ("cross", "prepend")),
                                     ("melody_fuse", self.melody_fuse, ("prepend", "sum"))):
            if value not in options:
                raise ValueError(f"{name} must be one of {', '.join(options)}, got {value!r}")
        if not self.segment_duration > 0:
            raise ValueError(f"segment_duration must be > 0, got {self.segment_duration}")


def build_bundle(cfg: LMRunConfig, codec: CompressionModel) -> LMBundle:
    """A fresh LM sized by ``cfg.lm`` (codebooks and vocabulary from the codec) with the configured conditioners."""
    n_q, card = codec.num_codebooks, codec.cardinality
    delays = cfg.lm.delays if len(cfg.lm.delays) == n_q else tuple(range(n_q))
    lm_cfg = cfg.lm.replace(n_q=n_q, card=card, delays=delays,
                            cross_attention=cfg.text_encoder != "none" and cfg.fuse == "cross")
    torch.manual_seed(cfg.train.seed)  # the same config starts from the same weights (projections included)
    conditioners: dict[str, nn.Module] = {}
    fuse: dict[str, list[str]] = {"cross": [], "prepend": [], "sum": []}
    if cfg.text_encoder == "sentence":
        conditioners["description"] = SentenceConditioner(
            lm_cfg.dim, cfg.text_encoder_name or "sentence-transformers/all-MiniLM-L6-v2", pooling=cfg.text_pooling)
    elif cfg.text_encoder == "t5":
        conditioners["description"] = T5Conditioner(lm_cfg.dim, cfg.text_encoder_name or "t5-base")
    if "description" in conditioners:
        fuse[cfg.fuse].append("description")
    if cfg.melody:
        conditioners["self_wav"] = ChromaConditioner(
            lm_cfg.dim, codec.sample_rate, cfg.segment_duration,
            frame_rate=codec.frame_rate if cfg.melody_fuse == "sum" else None)
        fuse[cfg.melody_fuse].append("self_wav")
    lm = LMModel(lm_cfg)
    return LMBundle(lm=lm, conditioners=nn.ModuleDict(conditioners), fuser=ConditionFuser(fuse),
                    cfg_coef=cfg.cfg_coef, max_duration=cfg.segment_duration, sample_rate=codec.sample_rate,
                    channels=codec.channels)


def load_models(cfg: LMRunConfig) -> tuple[CompressionModel, LMBundle]:
    """The frozen codec and the bundle to train: new (``cfg.lm``) or from ``cfg.init_from`` (fine-tuning)."""
    if cfg.init_from:
        bundle = load_lm_bundle(cfg.init_from)
        if cfg.text_encoder_name:
            for module in bundle.conditioners.values():
                if isinstance(module, T5Conditioner | SentenceConditioner):
                    module.use_encoder(cfg.text_encoder_name)
        location = cfg.codec or (Path(cfg.init_from).parent if Path(cfg.init_from).is_file() else cfg.init_from)
        codec = CompressionModel.get_pretrained(location)
        if codec.num_codebooks != bundle.lm.cfg.n_q:
            codec.set_num_codebooks(bundle.lm.cfg.n_q)
        if cfg.melody_fuse == "sum":
            sum_melody(bundle, codec.frame_rate)
        return codec.eval(), bundle
    if not cfg.codec:
        raise WavecraftError("no codec given: set codec=PATH (a trained codec folder or checkpoint)")
    codec = CompressionModel.get_pretrained(cfg.codec).eval()
    return codec, build_bundle(cfg, codec)


def sum_melody(bundle: LMBundle, frame_rate: float) -> None:
    """Switch a loaded model's melody from ``prepend`` to ``sum`` (one chroma vector per codec frame, spanning
    ``max_duration``), keeping its chroma projection as the starting point; a no-op if it is summed already."""
    melody = {n: m for n, m in bundle.conditioners.items() if isinstance(m, ChromaConditioner)}
    if not melody:
        raise WavecraftError("melody_fuse=sum: the init_from model has no melody conditioner")
    if bundle.max_duration is None:
        raise WavecraftError("melody_fuse=sum: the init_from model has no max_duration")
    for name, module in melody.items():
        if bundle.fuser.cond2fuse.get(name) == "sum":
            continue
        module.set_window(bundle.max_duration, frame_rate)
        bundle.fuser.cond2fuse[name] = "sum"


def make_batches(cfg: LMRunConfig, codec: CompressionModel, conditions: ConditionProjector):  # noqa: ANN201
    """``batches(step)`` for the solver, from the manifest in the configured ``codes`` mode."""
    from ..data import read_manifest
    from .lm_data import CodeCorpus, corpus_batches, on_the_fly_batches

    if not cfg.manifest:
        raise WavecraftError("no training manifest given (set manifest=PATH)")
    metas = read_manifest(cfg.manifest)
    frames = int(round(cfg.segment_duration * codec.frame_rate))
    if cfg.codes == "on_the_fly":
        return on_the_fly_batches(metas, codec, conditions, cfg.segment_duration, cfg.train.batch_size,
                                  cfg.train.total_steps, cfg.train.seed)
    chroma = next((m for m in conditions.conditioners.values() if isinstance(m, ChromaConditioner)), None)
    cache = Path(cfg.train.output_dir) / "codes" if cfg.codes == "disk" else None
    corpus = CodeCorpus(metas, codec, cache_dir=cache, chroma=chroma, on_bad_file=cfg.on_bad_file,
                        source=str(cfg.manifest))
    if is_main():
        hours = corpus.total_frames / codec.frame_rate / 3600
        print(f"{cfg.manifest}: {len(corpus.metas)} files, {hours:.2f} h of codes, {len(corpus.skipped)} skipped")
    return corpus_batches(corpus, conditions, frames, cfg.train.batch_size, cfg.train.seed)


def export(bundle: LMBundle, codec: CompressionModel, solver: LMSolver, directory: Path) -> Path:
    """Write the trained model (EMA weights when the run keeps them) with ``save_pretrained``'s layout; weights with
    NaN or infinite values are refused with a one-line error (nothing is written)."""
    weights = solver.ema.state_dict() if solver.ema is not None else solver.trainable.state_dict()
    bad = non_finite(weights) or non_finite(codec.state_dict(), "codec.")
    if bad is not None:
        raise WavecraftError(f"refusing to export {directory}: {bad} has NaN or infinite values")
    if solver.ema is not None:
        solver.trainable.load_state_dict({**solver.trainable.state_dict(), **solver.ema.state_dict()})
    return save_generator(bundle, codec, directory)


def write_samples(bundle: LMBundle, codec: CompressionModel, cfg: LMRunConfig, step: int) -> None:
    """Generate ``sample_prompts`` with the current weights into ``output_dir/samples/step{step}_{i}.wav``."""
    from ..audio import audio_write
    from ..models.musicgen import MusicGen

    was_training = bundle.lm.training
    model = MusicGen("training-sample", codec, bundle)
    model.set_generation_params(duration=min(cfg.sample_duration, cfg.segment_duration), seed=cfg.train.seed)
    wav = model.generate(list(cfg.sample_prompts))
    folder = Path(cfg.train.output_dir) / "samples"
    for i, one in enumerate(wav):
        audio_write(folder / f"step{step}_{i}", one.cpu(), codec.sample_rate, strategy="peak")
    bundle.lm.train(was_training)


def train_lm(cfg: LMRunConfig, max_steps: int | None = None) -> Path | None:
    """Run (or resume) the training described by ``cfg``; return the exported folder once ``total_steps`` is
    reached, else ``None`` (``max_steps`` stops this call early, e.g. to split a long run into sessions)."""
    init_from_env()
    codec, bundle = load_models(cfg)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    codec.to(device)
    bundle.to(device)
    conditions = ConditionProjector(bundle.conditioners, bundle.fuser)
    batches = make_batches(cfg, codec, conditions)
    solver = LMSolver(bundle.lm, cfg.train, conditions=conditions)
    if cfg.sample_every > 0 and is_main():
        every = cfg.sample_every
        inner = solver.train_step

        def step_with_samples(codes, cond):  # noqa: ANN001, ANN202
            metrics = inner(codes, cond)
            if solver.step % every == 0:
                write_samples(bundle, codec, cfg, solver.step)
            return metrics

        solver.train_step = step_with_samples  # type: ignore[method-assign]
    solver.fit(batches, max_steps=max_steps)
    if solver.step < cfg.train.total_steps:
        return None
    final = Path(cfg.train.output_dir) / FINAL_DIR
    if is_main():
        export(bundle, codec, solver, final)
    barrier()
    return final
