"""musicnn (Pons & Serra, 2019) in PyTorch: the network of the `musicnn` 0.1.0 package, its
pretrained MSD and MTT tagging weights (converted from its TensorFlow checkpoints, see
mgc/bundled/musicnn/PROVENANCE.md), and a genre classifier built on it.

Input: log-compressed mel patches, (batch, frames, 96) as musicnn feeds them: audio at 16 kHz,
n_fft 512, hop 256, 96 Slaney mel bands, log10(10000·power + 1), 187 frames (3 s) per patch.
`FeatureConfig(sample_rate=16000, n_fft=512, hop_length=256, n_mels=96, scale="log10_10000")`
with un-normalised chunks of 187 frames computes exactly that (see `MUSICNN_FEATURES`).

The layers, as musicnn's `models.build_musicnn` builds them (TF names in brackets):

- input batch norm over the single spectrogram channel;
- front end: timbral blocks, convs 7 frames × 38 and × 67 mel bands (0.4 and 0.7 of 96), 204
  filters each, the time axis zero-padded by 3 on each side and the mel axis unpadded; temporal
  blocks, convs of 128, 64 and 32 frames × 1 band, 51 filters each, TF 'same' padding in time.
  Each: conv → ReLU → batch norm → max over the mel axis. Concatenated: 561 channels per frame.
- mid end: three convs of 7 frames over all channels, 64 filters, zero-padded by 3 (conv → ReLU
  → batch norm), the second and third with residual connections; the front end's output and the
  three outputs concatenated (753 channels per frame).
- back end: max and mean over time (`max_pool`, `mean_pool`, 753 each), interleaved per channel
  as TF's flatten of their concatenation does, batch norm, dropout 0.5, dense 200 + ReLU, batch
  norm (`penultimate`), dropout 0.5, dense 50 (the tags' logits).

Batch norms use TF's epsilon, 1e-3, and its moving-average momentum, 0.99 (torch's 0.01).
"""

from __future__ import annotations

import functools
import hashlib
import math
from pathlib import Path

import torch
import torchaudio
from torch import nn

from mgc.core.config import ChunkConfig, ConfigError, FeatureConfig
from mgc.models.embedding_store import EmbeddingStore, autocast_tag, module_digest

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "bundled" / "musicnn"
PRETRAINED = ("msd", "mtt")  # MSD_musicnn: Million Song Dataset; MTT_musicnn: MagnaTagATune

N_MELS = 96
PATCH_FRAMES = 187  # 3 s at 16 kHz, hop 256: musicnn's n_frames
# The front end that feeds musicnn (`scale` and a window of exactly PATCH_FRAMES frames:
# 187 × 256 / 16000 = 2.992 s, which Windowing rounds to 187; 3.0 s would round to 188).
MUSICNN_FEATURES = FeatureConfig(
    sample_rate=16000, n_fft=512, hop_length=256, n_mels=N_MELS, scale="log10_10000"
)
MUSICNN_CHUNKS = ChunkConfig(window_s=PATCH_FRAMES * 256 / 16000, overlap=0.0, normalize=False)

MSD_TAGS = (
    "rock,pop,alternative,indie,electronic,female vocalists,dance,00s,alternative rock,jazz,"
    "beautiful,metal,chillout,male vocalists,classic rock,soul,indie rock,Mellow,electronica,80s,"
    "folk,90s,chill,instrumental,punk,oldies,blues,hard rock,ambient,acoustic,experimental,"
    "female vocalist,guitar,Hip-Hop,70s,party,country,easy listening,sexy,catchy,funk,electro,"
    "heavy metal,Progressive rock,60s,rnb,indie pop,sad,House,happy"
).split(",")
MTT_TAGS = (
    "guitar,classical,slow,techno,strings,drums,electronic,rock,fast,piano,ambient,beat,violin,"
    "vocal,synth,female,indian,opera,male,singing,vocals,no vocals,harpsichord,loud,quiet,flute,"
    "woman,male vocal,no vocal,pop,soft,sitar,solo,man,classic,choir,voice,new age,dance,"
    "male voice,female vocal,beats,harp,cello,no voice,weird,country,metal,female voice,choral"
).split(",")
TAGS: dict[str, list[str]] = {"msd": MSD_TAGS, "mtt": MTT_TAGS}


def _batch_norm(channels: int, dims: int) -> nn.Module:
    """A batch norm with tf.layers' epsilon (1e-3) and momentum (0.99, i.e. torch's 0.01)."""
    cls = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
    return cls(channels, eps=1e-3, momentum=0.01)


def init_like_tf(model: nn.Module) -> None:
    """tf.layers' initialisers, as musicnn was trained from: Glorot-uniform kernels and zero
    biases (batch norms: unit scale, zero shift, as torch's). The mid end's convs count their
    fans as TF's 2-D conv over (7 frames × all channels) of one input map does."""
    for m in model.modules():
        if not isinstance(m, nn.Conv1d | nn.Conv2d | nn.Linear):
            continue
        w = m.weight
        if isinstance(m, nn.Conv1d):  # TF kernel (7, C, 1, out): receptive field 7·C
            fan_in, fan_out = w.shape[1] * w.shape[2], w.shape[0] * w.shape[1] * w.shape[2]
        else:
            fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(w)
        bound = math.sqrt(6 / (fan_in + fan_out))
        nn.init.uniform_(w, -bound, bound)
        nn.init.zeros_(m.bias)


def _tf_same(kernel: int) -> tuple[int, int]:
    """TF's 'same' padding at stride 1: the extra zero of an even kernel goes after, not before."""
    return (kernel - 1) // 2, kernel - 1 - (kernel - 1) // 2


class FrontBlock(nn.Module):
    """conv (frames × bands) → ReLU → batch norm → max over bands: (B, 1, T, F) → (B, C, T).

    With `low` > 0 it returns two maxima from the one conv: over every band position, and over
    the first `low` positions alone (those whose filter sees no band above a cutoff; see
    `MusicnnTrunk.lowband`)."""

    def __init__(self, filters: int, frames: int, bands: int, time_pad: tuple[int, int]):
        super().__init__()
        self.time_pad = time_pad
        self.bands = bands
        self.conv = nn.Conv2d(1, filters, (frames, bands))
        self.bn = _batch_norm(filters, 2)

    def forward(self, x: torch.Tensor, low: int = 0) -> torch.Tensor | tuple[torch.Tensor, ...]:
        x = nn.functional.pad(x, (0, 0, *self.time_pad))  # (F left, F right, T before, T after)
        if not self.training:
            return self._max_first(x, low)
        y = self.bn(torch.relu(self.conv(x)))
        return y.amax(dim=3) if not low else (y.amax(dim=3), y[..., :low].amax(dim=3))

    def _max_first(self, x: torch.Tensor, low: int) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """The same output in inference, from the conv's extremes over bands: with its running
        statistics the batch norm is a per-channel a·v + b, and ReLU and a·v + b (a ≥ 0) are
        monotone, so the max over bands of a·ReLU(z) + b is a·ReLU(max z) + b, or a·ReLU(min z)
        + b where a < 0. The full-size ReLU and batch norm passes become one reduction, and they
        then run on a tensor `bands` times smaller. The min is the max of −z: the sign goes into
        the conv's weights, so every channel wants a max, which max_pool2d takes over a
        channels-last map (on a CPU 10-15× faster than aminmax over the band axis, whose
        reduction was a third of the trunk's time)."""
        bn = self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias - bn.running_mean * scale
        sign = torch.where(scale >= 0, 1.0, -1.0).to(scale.dtype)
        z = nn.functional.conv2d(
            x.contiguous(memory_format=torch.channels_last),
            self.conv.weight * sign[:, None, None, None],
            self.conv.bias * sign,
        )

        def finish(part: torch.Tensor) -> torch.Tensor:
            extreme = nn.functional.max_pool2d(part, (1, part.shape[3])).squeeze(3)
            return torch.relu(extreme * sign[:, None]) * scale[:, None] + shift[:, None]

        if not low:
            return finish(z)
        below = nn.functional.max_pool2d(z[..., :low], (1, low))
        above = nn.functional.max_pool2d(z[..., low:], (1, z.shape[3] - low))
        return finish(torch.maximum(below, above)), finish(below)


class MidBlock(nn.Module):
    """conv of 7 frames over all channels, zero-padded by 3 → ReLU → batch norm: (B, C, T)."""

    def __init__(self, channels: int, filters: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, filters, 7, padding=3)
        self.bn = _batch_norm(filters, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(torch.relu(self.conv(x)))


class MusicnnTrunk(nn.Module):
    """musicnn up to its penultimate layer: (B, frames, n_mels) patches → named features.

    `n_mels` other than 96 (random init only) scales the timbral filters as musicnn does.
    """

    def __init__(
        self,
        n_mels: int = N_MELS,
        midend_filters: int = 64,
        backend_units: int = 200,
        dropout: float = 0.5,
    ):
        super().__init__()
        timbral, temporal = int(1.6 * 128), int(1.6 * 32)  # musicnn's num_filt = 1.6
        self.input_bn = _batch_norm(1, 2)
        self.timbral = nn.ModuleList(
            FrontBlock(timbral, 7, int(share * n_mels), (3, 3)) for share in (0.4, 0.7)
        )
        self.temporal = nn.ModuleList(
            FrontBlock(temporal, k, 1, _tf_same(k)) for k in (128, 64, 32)
        )
        front = 2 * timbral + 3 * temporal
        self.midend = nn.ModuleList(
            MidBlock(front if i == 0 else midend_filters, midend_filters) for i in range(3)
        )
        pooled = 2 * (front + 3 * midend_filters)  # max and mean of every channel
        self.backend_bn = _batch_norm(pooled, 1)
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(pooled, backend_units)
        self.dense_bn = _batch_norm(backend_units, 1)
        self.out_features = backend_units
        self.pooled_features = pooled
        self.front_channels = front
        self.timbral_channels = 2 * timbral
        self.lowband = 0  # mel bands below the low view's cut-off (set_lowband); 0: no view
        init_like_tf(self)

    def set_lowband(self, hz: float | None, features: FeatureConfig = MUSICNN_FEATURES) -> None:
        """Also compute `pooled_low`: the same features from the front end's filter positions
        that see no mel band reaching above `hz` (None: off). Band-limiting the input (a
        telephone line, an 8 kHz file, a low-bitrate codec's cut-off) above `hz` leaves them as
        they were, whereas `pooled` moves; a head that reads both can lean on what holds. Both
        come from one pass of the front end's convs, the costly part: the second view costs the
        mid end's (about 3 % of the trunk)."""
        if hz is None:
            self.lowband = 0
            return
        bands = bands_below(hz, features)
        widest = max(b.bands for b in self.timbral)
        if not widest <= bands < features.n_mels:
            raise ConfigError(
                f"model.lowband_hz={hz:g}: {bands} mel bands lie wholly below it; musicnn's "
                f"widest filter spans {widest}, so it takes a cut-off with {widest} to "
                f"{features.n_mels - 1} bands below"
            )
        self.lowband = bands

    def _front(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, 1, T, F) → the front end's (B, 561, T), and its low view when `lowband`."""
        blocks = [*self.timbral, *self.temporal]
        if not self.lowband:
            return torch.cat([block(x) for block in blocks], dim=1), None
        views = [block(x, self.lowband - block.bands + 1) for block in blocks]
        return torch.cat([v[0] for v in views], dim=1), torch.cat([v[1] for v in views], dim=1)

    def _rest(self, front: torch.Tensor) -> dict[str, torch.Tensor]:
        """The mid end and the back end's pooling on a front end's output (B, C, T)."""
        cnn1 = self.midend[0](front)
        cnn2 = self.midend[1](cnn1) + cnn1
        cnn3 = self.midend[2](cnn2) + cnn2
        frames = torch.cat([front, cnn1, cnn2, cnn3], dim=1)
        max_pool, mean_pool = frames.amax(dim=2), frames.mean(dim=2)
        # TF flattens (B, C, 2) [max, mean]: channel by channel, max then mean.
        pooled = self.backend_bn(torch.stack([max_pool, mean_pool], dim=2).flatten(1))
        return {"cnn1": cnn1, "cnn2": cnn2, "cnn3": cnn3, "max_pool": max_pool,
                "mean_pool": mean_pool, "pooled": pooled}  # fmt: skip

    def front_modules(self) -> nn.ModuleList:
        """The layers that see mel bands: the input batch norm and the timbral and temporal
        blocks (`front_end`), about 97 % of the trunk's FLOPs."""
        return nn.ModuleList([self.input_bn, *self.timbral, *self.temporal])

    def front_end(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T, n_mels) → the front end's output (B, 561, T), and its low view (the same
        shape) when `set_lowband` is on, else None: what `from_front` takes."""
        return self._front(self.input_bn(x.unsqueeze(1)))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, T, n_mels) → musicnn's features: `timbral` (B, T, 408), `temporal` (B, T, 153),
        `cnn1`…`cnn3` (B, T, 64), `max_pool` and `mean_pool` (B, 753), `pooled` (B, 1506: the
        two interleaved and batch-normed, the dense layer's input), `penultimate` (B, 200);
        with `set_lowband`, `pooled_low` too (B, 1506).
        The frame-wise ones are laid out as musicnn returns them, time first."""
        return self.from_front(*self.front_end(x))

    def from_front(
        self, front: torch.Tensor, front_low: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The rest of `forward`, from `front_end`'s output (B, C, T) and low view."""
        out = self._rest(front)
        hidden = torch.relu(self.dense(self.dropout(out["pooled"])))
        named = {"timbral": front[:, : self.timbral_channels], "cnn3": out.pop("cnn3")}
        named |= {"temporal": front[:, self.timbral_channels :], "cnn1": out.pop("cnn1")}
        named["cnn2"] = out.pop("cnn2")
        if front_low is not None:
            out["pooled_low"] = self._rest(front_low)["pooled"]
        return {
            **{k: v.transpose(1, 2) for k, v in named.items()},
            **out,
            "penultimate": self.dense_bn(hidden),
        }

    def tf_names(self) -> dict[str, str]:
        """This module's parameter and buffer prefixes → the TF variable scopes they come from.

        tf.layers names each layer kind by creation order (conv2d, conv2d_1, …), and musicnn
        creates them front end first, timbral before temporal, then mid end, then back end.
        """
        convs = [*self.timbral, *self.temporal, *self.midend]
        norms = [self.input_bn, *(b.bn for b in convs), self.backend_bn, self.dense_bn]
        names = {id(b.conv): _tf_scope("conv2d", i) for i, b in enumerate(convs)}
        names |= {id(m): _tf_scope("batch_normalization", i) for i, m in enumerate(norms)}
        names[id(self.dense)] = "dense"
        return {prefix: names[id(m)] for prefix, m in self.named_modules() if id(m) in names}


def bands_below(hz: float, features: FeatureConfig = MUSICNN_FEATURES) -> int:
    """How many of the leading mel bands take nothing from frequencies above `hz`: the bands of
    `features`' filterbank (Slaney, as `LogMel` builds it) whose highest nonzero STFT bin lies
    at or below `hz`."""
    n_freqs = features.n_fft // 2 + 1
    top = features.f_max if features.f_max is not None else features.sample_rate / 2
    fb = torchaudio.functional.melscale_fbanks(
        n_freqs, features.f_min, top, features.n_mels, features.sample_rate, "slaney", "slaney"
    )  # (n_freqs, n_mels)
    freqs = torch.linspace(0, features.sample_rate / 2, n_freqs)
    highest = torch.stack([freqs[(fb[:, m] > 0)].max() for m in range(features.n_mels)])
    return int((highest <= hz).long().cumprod(0).sum())


def _tf_scope(kind: str, index: int) -> str:
    return kind if index == 0 else f"{kind}_{index}"


class Musicnn(nn.Module):
    """The tagger: (B, frames, 96) patches → (B, 50) tag probabilities, the taggram's rows."""

    def __init__(self, n_mels: int = N_MELS, n_tags: int = 50, dropout: float = 0.5):
        super().__init__()
        self.trunk = MusicnnTrunk(n_mels, dropout=dropout)
        self.dropout = nn.Dropout(dropout)
        self.tags = nn.Linear(self.trunk.out_features, n_tags)
        init_like_tf(self.tags)

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The trunk's features plus `logits` and `taggram` (sigmoid of the logits)."""
        out = self.trunk(x)
        out["logits"] = self.tags(self.dropout(out["penultimate"]))
        out["taggram"] = torch.sigmoid(out["logits"])
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)["taggram"]

    def tf_names(self) -> dict[str, str]:
        """As `MusicnnTrunk.tf_names`, for the whole tagger (its output layer is `dense_1`)."""
        names = {f"trunk.{k}": v for k, v in self.trunk.tf_names().items()}
        return {**names, "tags": "dense_1"}


def _check_weights(which: str) -> None:
    if which not in PRETRAINED:
        raise ConfigError(
            f"model.pretrained={which}: musicnn takes {' or '.join(PRETRAINED)} (its bundled "
            "tagging weights) or null (random init)"
        )


@functools.cache
def _pretrained_state(which: str) -> dict[str, torch.Tensor]:
    path = WEIGHTS_DIR / f"{which}_musicnn.pt"
    if not path.is_file():
        raise ConfigError(f"model.pretrained={which}: the musicnn weights are missing ({path})")
    return torch.load(path, map_location="cpu", weights_only=True)


def pretrained_musicnn(which: str = "msd") -> Musicnn:
    """musicnn with the bundled MSD_musicnn ("msd") or MTT_musicnn ("mtt") weights, in
    inference mode. Its `features(x)["taggram"]` names its columns in `TAGS[which]`."""
    _check_weights(which)
    model = Musicnn()
    model.load_state_dict(_pretrained_state(which))
    return model.eval()


# What a classifier's head may read: MusicnnTrunk.forward's names, or "pooled+low", `pooled`
# beside `pooled_low` (the trunk's low view, `set_lowband`).
EMBEDDINGS = ("penultimate", "pooled", "pooled+low")


class HeadEnsemble(nn.Module):
    """Several heads on one embedding, as one: the log of the mean of their probabilities, so
    that a softmax of its output is that mean (a seed ensemble at the cost of one trunk pass)."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        log_probs = torch.stack([torch.log_softmax(m(z).float(), dim=1) for m in self.members])
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))


class MusicnnClassifier(nn.Module):
    """musicnn's trunk with a new head (dropout → n_classes logits) in place of its 50 tags.

    Takes the project's model input, (B, 1, n_mels, frames): with `MUSICNN_FEATURES` and
    `MUSICNN_CHUNKS`, musicnn's own patches. `pretrained`: "msd", "mtt" or None (random init).
    `embedding` picks what the head reads (`EMBEDDINGS`), `head_hidden` > 0 puts one hidden
    ReLU layer in it (a small MLP probe rather than a linear one).
    `dropout` is the new head's; the trunk keeps musicnn's own (0.5, before its penultimate
    layer). `freeze` trains the head alone: the trunk's parameters take no gradient and it
    stays in inference mode (batch norms on their pretrained statistics, no dropout), a fixed
    feature extractor. `freeze_front` does that to the front end alone (`front_modules`): the
    mid end, back end and head fine-tune on its fixed output.
    """

    def __init__(
        self,
        n_classes: int,
        n_mels: int = N_MELS,
        dropout: float = 0.5,
        pretrained: str | None = None,
        freeze: bool = False,
        embedding: str = "penultimate",
        head_hidden: int = 0,
        heads: int = 1,
        lowband_hz: float = 3500.0,
        freeze_front: bool = False,
    ):
        super().__init__()
        pretrained = pretrained or None
        if freeze and freeze_front:
            raise ConfigError(
                "model.freeze and model.freeze_front_end: pick one (freeze fixes the whole "
                "trunk, freeze_front_end its front end alone)"
            )
        if heads < 1:
            raise ConfigError(f"model.heads: {heads} (1 for a plain head, more for an ensemble)")
        if heads > 1 and not freeze:
            raise ConfigError(
                f"model.heads={heads}: an ensemble of heads shares a frozen trunk (model.freeze)"
            )
        if embedding not in EMBEDDINGS:
            raise ConfigError(
                f"model.embedding: '{embedding}' is not one of {', '.join(EMBEDDINGS)}"
            )
        if head_hidden < 0:
            raise ConfigError(f"model.head_hidden: {head_hidden} is negative (0 = linear head)")
        if pretrained is not None:
            _check_weights(pretrained)
        if pretrained is not None and n_mels != N_MELS:
            raise ConfigError(
                f"model.pretrained={pretrained}: musicnn's weights take {N_MELS} mel bands, "
                f"features.n_mels is {n_mels}"
            )
        self.trunk = pretrained_musicnn(pretrained).trunk if pretrained else MusicnnTrunk(n_mels)
        self.embedding = embedding
        if embedding == "pooled+low":
            self.trunk.set_lowband(lowband_hz)
        width = {
            "penultimate": self.trunk.out_features,
            "pooled": self.trunk.pooled_features,
            "pooled+low": 2 * self.trunk.pooled_features,
        }[embedding]

        def head() -> nn.Module:
            layers: list[nn.Module] = [nn.Dropout(dropout)]
            wide = width
            if head_hidden:
                layers += [nn.Linear(wide, head_hidden), nn.ReLU(), nn.Dropout(dropout)]
                wide = head_hidden
            made = nn.Sequential(*layers, nn.Linear(wide, n_classes))
            init_like_tf(made)
            return made

        self.head = head() if heads == 1 else HeadEnsemble([head() for _ in range(heads)])
        self.frozen = freeze
        self.frozen_front = freeze_front
        self.trunk.requires_grad_(not freeze)
        self.trunk.front_modules().requires_grad_(not (freeze or freeze_front))
        # A frozen trunk (or front end) is a fixed function of its input: the trainer may let
        # it remember what it computed for each window (remember_embeddings), since a probe
        # otherwise spends every epoch recomputing the same trunk outputs for a head of a few
        # thousand weights, and a fine-tune above the front end 97 % of its FLOPs.
        self._memo: dict[bytes, torch.Tensor] | None = None
        self._store: tuple[str, str] | None = None  # (root, namespace) when stored too
        self.info = {"pretrained": f"musicnn:{pretrained}" if pretrained else "scratch"}
        fixed = self._fixed_modules()
        if fixed is not None:
            self.info["frozen_params"] = sum(p.numel() for p in fixed.parameters())
        self.train()

    def _fixed_modules(self) -> nn.Module | None:
        """The trunk's part that never trains (whole trunk, front end) or None."""
        if self.frozen:
            return self.trunk
        return self.trunk.front_modules() if self.frozen_front else None

    def train(self, mode: bool = True) -> MusicnnClassifier:
        super().train(mode)
        fixed = self._fixed_modules()
        if fixed is not None:
            fixed.eval()
        return self

    def remember_embeddings(self, on: bool = True, store: str | None = None) -> None:
        """While on (and the trunk frozen), each distinct input window's trunk output is kept
        and reused: a probe's epochs then cost its head alone once every window was seen. The
        trainer turns it on for one fit (a few thousand windows: tens of MB); prediction never
        does, so a long-running server's memory stays flat. Off drops what was kept.
        `store`: a folder or fsspec URI where the outputs also go (`EmbeddingStore`), so other
        fits on the same trunk (a row's trials and seeds) find them there.
        With `freeze_front` it is the front end's output that is kept (561 × 187 values a
        window, 420 kB: GBs for a split, so only for windows that repeat)."""
        fixed = self._fixed_modules()
        self._memo = {} if on and fixed is not None else None
        self._store = None
        if self._memo is not None and store is not None:
            what = "front" if self.frozen_front else self.embedding
            what += f"{self.trunk.lowband}" if self.trunk.lowband else ""
            self._store = (store, f"musicnn-{module_digest(fixed)}-{what}")

    def _stored(self, x: torch.Tensor) -> EmbeddingStore | None:
        """The disk store for inputs like `x` at the precision the trunk runs at now."""
        if self._store is None:
            return None
        root, name = self._store
        dtype = str(x.dtype).removeprefix("torch.")
        return EmbeddingStore(root, f"{name}-{dtype}-{autocast_tag(x.device.type)}")

    def _pick(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        """The trunk's named features → what the head reads, (B, features)."""
        if self.embedding == "pooled+low":
            return torch.cat([out["pooled"], out["pooled_low"]], dim=1)
        return out[self.embedding]

    def _fixed(self, x: torch.Tensor) -> torch.Tensor:
        """What the part that never trains makes of (B, 1, n_mels, frames): the head's input
        under `freeze`; under `freeze_front` the front end's output (B, 561, T), with its low
        view stacked after it on the channel axis when there is one."""
        patches = x.squeeze(1).transpose(1, 2)
        if self.frozen:
            return self._pick(self.trunk(patches))
        front, low = self.trunk.front_end(patches)
        return front if low is None else torch.cat([front, low], dim=1)

    def _from_fixed(self, fixed: torch.Tensor) -> torch.Tensor:
        """`_fixed`'s output → what the head reads (the trained mid and back end, if any)."""
        if self.frozen:
            return fixed
        if not self.trunk.lowband:
            return self._pick(self.trunk.from_front(fixed))
        return self._pick(self.trunk.from_front(*fixed.split(self.trunk.front_channels, dim=1)))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, n_mels, frames) model input → what the head reads, (B, features)."""
        if self._fixed_modules() is None:
            return self._pick(self.trunk(x.squeeze(1).transpose(1, 2)))
        return self._from_fixed(self._remembered(x))

    def _remembered(self, x: torch.Tensor) -> torch.Tensor:
        """`_fixed(x)`, from what was kept where a window was seen before (remember_embeddings)."""
        if self._memo is None:
            with torch.no_grad():
                return self._fixed(x)
        # Keyed by the window's exact bytes: a frozen trunk in inference mode maps equal
        # windows to equal outputs, whatever the batch they arrive in. Kept as float32, what
        # the disk store holds, so windows from either stack together.
        raw = x.detach().cpu().contiguous().reshape(len(x), -1).view(torch.uint8)  # any dtype
        keys = [hashlib.blake2b(row.numpy().tobytes(), digest_size=16).digest() for row in raw]
        new = [i for i, key in enumerate(keys) if key not in self._memo]
        store = self._stored(x) if new else None
        if store is not None:
            found = {i: v for i in new if (v := store.get(keys[i])) is not None}
            self._memo.update((keys[i], v.to(x.device)) for i, v in found.items())
            new = [i for i in new if i not in found]
        if new:
            with torch.no_grad():
                out = self._fixed(x[new]).float()
            for i, value in zip(new, out.detach(), strict=True):
                self._memo[keys[i]] = value
                if store is not None:
                    store.put(keys[i], value)
        return torch.stack([self._memo[key] for key in keys])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))
