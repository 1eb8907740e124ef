"""Engine-agnostic federated core: models, split, training, evaluation, DP, study schema.

Tiny tensors, one thread, no FLARE: these run in seconds.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pair.core.errors import Invalid
from pair.federated.core.data import SiteData, load_site, patient_split, save_site
from pair.federated.core.models import ResNet18, StudyNet, parameter_bytes
from pair.federated.core.privacy import clip_and_noise, zcdp_epsilon
from pair.federated.core.site import SiteRunner
from pair.federated.core.train import (
    State,
    TrainConfig,
    evaluate,
    get_state,
    local_train,
    seed_everything,
)
from pair.federated.study import decode_study, example_studies, load_study, parse_study

STUDY = {
    "schema": "pair-federated-study/1",
    "id": "unit",
    "use_case": "covid19-cxr",
    "model": {"width": 4},
    "input": {"size": 16},
    "sites": [{"name": "site-1"}, {"name": "site-2"}],
    "training": {"rounds": 1, "batch_size": 8, "min_sites": 1, "lr": 0.1},
}


def toy_data(n: int = 48, seed: int = 0, shift: float = 0.0) -> SiteData:
    """Separable toy images: positives carry a bright centre square."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(np.int64)
    x = rng.normal(0.3 + shift, 0.1, size=(n, 1, 16, 16)).astype(np.float32)
    x[y == 1, :, 5:11, 5:11] += 0.6
    patients = np.array([f"P{i // 2:03d}" for i in range(n)])  # two images per patient
    return SiteData(x, y, patients)


def train_toy(start: dict[str, torch.Tensor], data: SiteData, cfg: TrainConfig) -> State:
    """A tiny CNN loaded with ``start`` and trained on ``data`` with ``cfg`` from fixed seeds."""
    seed_everything(0, 1)
    m = StudyNet("small_cnn", 1, 4)
    m.load_state_dict(start)
    local_train(m, data, cfg)
    return get_state(m)


def assert_reproducible_and_effective(option: str) -> None:
    """Training with the ``TrainConfig`` flag ``option`` on is reproducible under the same seed
    and differs from training with it off."""
    data = toy_data(32)
    start = get_state(StudyNet("small_cnn", 1, 4))

    def trained(on: bool) -> State:
        return train_toy(start, data, TrainConfig(2, 8, lr=0.1, seed=5, **{option: on}))

    a, b, plain = trained(True), trained(True), trained(False)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], plain[k]) for k in a)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    seed_everything(0, threads=1)


def test_models_shapes_and_resnet18_size() -> None:
    x = torch.zeros(2, 1, 32, 32)
    for arch in ("small_cnn", "resnet18"):
        assert StudyNet(arch, 1, 8)(x).shape == (2,)
    assert StudyNet("cnn25d", 5, 8)(torch.zeros(2, 5, 32, 32)).shape == (2,)
    grouped = StudyNet("resnet18", 1, 8, norm="group")
    assert grouped(x).shape == (2,) and not list(grouped.buffers())  # nothing un-noised
    # ResNet-18 (He et al. 2016) has 11,689,512 parameters with 3 input channels and 1000
    # classes; 1 input channel (-6,272 = 64·2·7·7) and 1 output (-512,999 = 999·513) leave
    # 11,170,241.
    n = sum(p.numel() for p in ResNet18(in_channels=1, width=64).parameters())
    assert n == 11_689_512 - 64 * 2 * 7 * 7 - 999 * 513
    with pytest.raises(ValueError, match="unknown architecture"):
        StudyNet("vgg")
    state = get_state(StudyNet("small_cnn", 1, 4))
    assert parameter_bytes(state) == sum(t.numel() * t.element_size() for t in state.values())


def test_patient_split_is_deterministic_and_patient_level(tmp_path: Path) -> None:
    data = toy_data(40)
    train, val = patient_split(data, 0.25, seed=3)
    _again_train, again_val = patient_split(data, 0.25, seed=3)
    assert list(val.patients) == list(again_val.patients)
    assert set(train.patients).isdisjoint(set(val.patients))
    assert len(set(val.patients)) == math.ceil(0.25 * 20)
    assert len(train) + len(val) == len(data)
    # order of the cases does not change the split
    perm = np.random.default_rng(1).permutation(len(data))
    _, shuffled_val = patient_split(data.subset(perm), 0.25, seed=3)
    assert set(shuffled_val.patients) == set(val.patients)
    # another seed, another split
    assert set(patient_split(data, 0.25, seed=4)[1].patients) != set(val.patients)
    with pytest.raises(Invalid, match="at least 2"):
        patient_split(data.subset(np.array([0, 1])), 0.5, 0)
    save_site(tmp_path / "s", data, {"site": "x"})
    back = load_site(tmp_path / "s")
    assert np.array_equal(back.images, data.images) and list(back.patients) == list(data.patients)
    assert not list((tmp_path / "s").glob("*.part"))
    with pytest.raises(Invalid, match=r"no site\.npz"):
        load_site(tmp_path / "missing")
    with pytest.raises(Invalid, match="labels must be 0 or 1"):
        SiteData(data.images[:2], np.array([0, 2]), data.patients[:2])


def test_training_learns_and_evaluation_matches_reference() -> None:
    data = toy_data(64)
    model = StudyNet("small_cnn", 1, 4)
    before = evaluate(model, data)
    result = local_train(model, data, TrainConfig(epochs=4, batch_size=8, lr=0.1, seed=0))
    after = evaluate(model, data)
    assert result.samples == 4 * 64 and result.steps == 4 * 8
    assert after["loss"] < before["loss"] and after["auc"] > 0.95
    assert after["auc_lower"] <= after["auc"] <= after["auc_upper"]
    # AUC against the Mann-Whitney count on the same scores (independent reference)
    from pair.federated.core.train import predict

    p = predict(model, data)
    pos, neg = p[data.labels == 1], p[data.labels == 0]
    mw = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (
        len(pos) * len(neg)
    )
    assert after["auc"] == pytest.approx(mw)
    tp = int(((p >= 0.5) & (data.labels == 1)).sum())
    assert after["sensitivity"] == pytest.approx(tp / len(pos))
    one_class = data.subset(np.flatnonzero(data.labels == 1))
    assert "auc" not in evaluate(model, one_class)


def test_training_is_deterministic_and_fedprox_pulls_to_global() -> None:
    data = toy_data(32)
    start = get_state(StudyNet("small_cnn", 1, 4))

    def trained(mu: float) -> State:
        return train_toy(start, data, TrainConfig(3, 8, lr=0.1, seed=5, fedprox_mu=mu))

    params = {n for n, _ in StudyNet("small_cnn", 1, 4).named_parameters()}  # not BN statistics

    def drift(state: dict[str, torch.Tensor]) -> float:
        return sum(float(((state[k] - start[k]) ** 2).sum()) for k in params)

    a, b = trained(0.0), trained(0.0)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert drift(trained(10.0)) < 0.5 * drift(a)


def test_image_input_norm_removes_affine_site_shifts_and_exports() -> None:
    """input_norm "image": the network's output no longer depends on a site's brightness and
    contrast (x -> a·x + b), the study carries it to the model, and the ONNX export does it too."""
    import onnxruntime as ort

    from pair.federated.core.models import standardize_images
    from pair.federated.core.site import build_model
    from pair.federated.export import onnx_bytes

    x = torch.from_numpy(toy_data(8).images)
    shifted = 1.7 * x + 0.4
    z = standardize_images(x)
    assert float(z.mean(dim=(2, 3)).abs().max()) < 1e-5
    assert torch.allclose(z.var(dim=(2, 3), unbiased=False), torch.ones(8, 1), atol=1e-2)
    study = parse_study({**STUDY, "model": {"width": 4, "input_norm": "image"}}, "t")
    model = build_model(study).eval()
    assert model.input_norm == "image"
    with torch.no_grad():
        assert torch.allclose(model(x), model(shifted), atol=1e-3)
        plain = StudyNet("small_cnn", 1, 4).eval()
        assert not torch.allclose(plain(x), plain(shifted), atol=1e-2)  # the default does not
    session = ort.InferenceSession(onnx_bytes(study, get_state(model)))
    onnx_out = session.run(None, {"image": shifted.numpy()})[0]
    with torch.no_grad():
        assert np.allclose(onnx_out, model(shifted).numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="unknown input_norm"):
        StudyNet("small_cnn", 1, 4, input_norm="global")
    with pytest.raises(Invalid, match="input_norm"):
        parse_study({**STUDY, "model": {"input_norm": "global"}}, "t")


def test_augmentation_flips_and_shifts_reproducibly() -> None:
    """Each augmented image is its source flipped or not and shifted by at most size/16 (edges
    replicated); the draws follow the seed, and training with it is deterministic."""
    from pair.federated.core.site import train_config
    from pair.federated.core.train import augment_batch

    x = torch.rand(6, 1, 16, 16)
    out = augment_batch(x, torch.Generator().manual_seed(3))
    again = augment_batch(x, torch.Generator().manual_seed(3))
    assert out.shape == x.shape and torch.equal(out, again)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
    flipped = torch.nn.functional.pad(x.flip(3), (1, 1, 1, 1), mode="replicate")
    kinds = set()
    for i in range(6):
        found = [
            (f, a, b)
            for f, src in ((0, padded), (1, flipped))
            for a in range(3)
            for b in range(3)
            if torch.equal(out[i], src[i, :, a : a + 16, b : b + 16])
        ]
        assert found, i  # every output is one flip/shift of its own input
        kinds.add(found[0])
    assert len(kinds) > 1 and any(k != (0, 1, 1) for k in kinds)  # not the identity throughout
    study = parse_study({**STUDY, "training": {**STUDY["training"], "augment": True}}, "t")
    cfg = train_config(study, 0, 0)
    assert cfg.augment and not train_config(parse_study(STUDY, "t"), 0, 0).augment
    assert_reproducible_and_effective("augment")


def test_dp_clipping_noise_and_zcdp_epsilon() -> None:
    # Bun & Steinke 2016: Gaussian with multiplier sigma is 1/(2 sigma^2)-zCDP (Prop 1.6);
    # T rounds compose to T/(2 sigma^2) (Lemma 1.7); rho-zCDP => (rho + 2 sqrt(rho ln(1/delta)),
    # delta)-DP (Prop 1.3). Worked by hand: sigma = 1, T = 1, delta = 1e-5: rho = 0.5,
    # eps = 0.5 + 2 sqrt(0.5 * 11.5129) = 5.2985; sigma = 2, T = 8: rho = 1, eps = 1 + 2
    # sqrt(11.5129) = 7.7861.
    assert zcdp_epsilon(1.0, 1, 1e-5) == pytest.approx(5.2985, abs=1e-4)
    assert zcdp_epsilon(2.0, 8, 1e-5) == pytest.approx(7.7861, abs=1e-4)
    assert zcdp_epsilon(1.0, 0, 1e-5) == 0.0
    assert zcdp_epsilon(1.0, 2, 1e-5) > zcdp_epsilon(1.0, 1, 1e-5)
    with pytest.raises(ValueError):
        zcdp_epsilon(0.0, 1, 1e-5)
    update = {"w": torch.full((1000,), 0.1), "n": torch.tensor(3)}
    gen = torch.Generator().manual_seed(0)
    out, norm = clip_and_noise(update, clip_norm=1.0, noise_multiplier=0.01, generator=gen)
    assert norm == pytest.approx(math.sqrt(1000) * 0.1, rel=1e-6)
    # clipped to C = 1, plus noise of norm about sigma·C·sqrt(d) = 0.01·sqrt(1000)
    assert float(out["w"].norm()) == pytest.approx(math.sqrt(1 + 1000 * 0.01**2), abs=0.03)
    assert float((out["w"] - update["w"] / norm).std()) == pytest.approx(0.01, rel=0.1)
    assert torch.equal(out["n"], update["n"])  # integer buffers are not noised


def test_site_runner_round_reports_aggregates_only() -> None:
    dp = {"dp": {"clip_norm": 0.5, "noise_multiplier": 1.0}}
    study = parse_study({**STUDY, "model": {"width": 4, "norm": "group"}, "privacy": dp}, "t")
    runner = SiteRunner(study, "site-1", toy_data(40))
    start = get_state(runner.model)
    state, metrics, steps = runner.round(start, 0)
    assert steps > 0 and set(state) == set(start)
    assert metrics["train_cases"] + metrics["val_cases"] == 40
    assert metrics["dp_epsilon"] == pytest.approx(zcdp_epsilon(1.0, 1, 1e-5))
    assert {"global_val_loss", "val_loss", "train_loss", "bytes_sent"} <= set(metrics)
    assert all(isinstance(v, float) for v in metrics.values())  # numbers only: no identifiers
    _, metrics2, _ = runner.round(state, 1)
    assert metrics2["dp_epsilon"] == pytest.approx(zcdp_epsilon(1.0, 2, 1e-5))


def test_local_baseline_reports_local_only_model_without_touching_the_update() -> None:
    """The local-only model (never federated) trains next to the federated one; the parameters
    sent are exactly those of a run without it, and only its metrics are reported."""
    sent = {}
    for on in (True, False):
        seed_everything(0, threads=1)
        study = parse_study({**STUDY, "training": {**STUDY["training"], "local_baseline": on}}, "t")
        runners = [
            SiteRunner(study, "site-1", toy_data(40)),
            SiteRunner(study, "site-2", toy_data(40, seed=1, shift=0.2)),
        ]
        state = get_state(runners[0].model)
        for r in range(2):
            results = [runner.round(state, r) for runner in runners]
            assert all(("local_only_val_auc" in m) is on for _, m, _ in results)
            state = {  # FedAvg of the two sites
                k: (results[0][0][k] + results[1][0][k]) / 2
                if state[k].is_floating_point()
                else results[0][0][k]
                for k in state
            }
        sent[on] = state
        baseline = runners[0].baseline_state
        if on:  # the local-only model went its own way: it is not the federated one
            assert baseline is not None
            assert any(not torch.equal(baseline[k], state[k]) for k in state)
    assert all(torch.equal(sent[True][k], sent[False][k]) for k in sent[True])


def test_benchmark_recipe_example_carries_run_9s_recipe() -> None:
    """docs/federated.md points users to this example as the recipe that met the targets."""
    (path,) = [p for p in example_studies() if p.name == "covid-cxr-fedopt-opacity.yaml"]
    study = load_study(path)
    s, t, m = study.strategy, study.training, study.model
    assert (s.name, s.server_lr, s.server_momentum) == ("fedopt", 1.0, 0.6)
    assert (t.rounds, t.local_epochs, t.batch_size, t.optimizer, t.lr) == (30, 1, 16, "adam", 1e-3)
    assert (t.batchnorm_freeze_round, t.intensity_augment, t.augment) == (2, True, False)
    assert (m.architecture, m.width, m.norm, m.input_norm) == ("small_cnn", 16, "batch", "image")
    assert study.labels.negative == ("negative",)  # any opacity: every other RSNA category


def test_study_schema_errors_are_precise(tmp_path: Path) -> None:
    for path in example_studies():
        assert load_study(path).id == path.stem
    s = parse_study(STUDY, "t")
    assert decode_study(s.encode()) == s and len(s.digest()) == 64
    bad = [
        ({**STUDY, "schema": "x"}, "schema"),
        ({**STUDY, "strategy": {"name": "krum"}}, "strategy.name"),
        ({**STUDY, "training": {"min_sites": 3}}, "min_sites (3) exceeds the 2 sites"),
        ({**STUDY, "sites": [{"name": "a"}, {"name": "a"}]}, "repeated: a"),
        ({**STUDY, "sites": [{"name": "a", "cohort": "colour=red"}]}, "colour"),
        ({**STUDY, "input": {"slices": 3}}, "slices must be 1 for CXR"),
        ({**STUDY, "model": {"architecture": "cnn25d"}}, "cnn25d needs input.modality CT"),
        ({**STUDY, "input": {"modality": "CT", "slices": 4}}, "slices must be odd"),
        ({**STUDY, "extra": 1}, "extra"),
        ({**STUDY, "privacy": {"dp": {}}}, "differential privacy needs model.norm: group"),
        (
            {
                **STUDY,
                "model": {"norm": "group"},
                "strategy": {"name": "scaffold"},
                "privacy": {"dp": {}},
            },
            "cannot be combined with strategy scaffold",
        ),
    ]
    for data, needle in bad:
        with pytest.raises(Invalid) as err:
            parse_study(data, "study.yaml")
        assert needle in err.value.message and err.value.message.startswith("study.yaml")
    (tmp_path / "bad.yaml").write_text("id: [", encoding="utf-8")
    with pytest.raises(Invalid, match="not valid YAML"):
        load_study(tmp_path / "bad.yaml")
    with pytest.raises(Invalid, match="cannot read"):
        load_study(tmp_path / "none.yaml")


def test_core_does_not_import_flare() -> None:
    code = (
        "import sys\n"
        "import pair.federated.core.site, pair.federated.core.synthetic, pair.federated.study\n"
        "bad = [m for m in sys.modules if m.split('.')[0] == 'nvflare']\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    for path in Path(__file__).parents[2].joinpath("src/pair/federated/core").glob("*.py"):
        assert "nvflare" not in path.read_text(encoding="utf-8"), path


def test_cli_validate_reports_errors_without_traceback(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pair.cli.main import app

    runner = CliRunner()
    good = example_studies()[0]
    ok = runner.invoke(app, ["fl", "validate", str(good)])
    assert ok.exit_code == 0 and load_study(good).digest() in ok.output.replace("\n", "")
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema: pair-federated-study/1\nid: Bad Id\nuse_case: x\nsites: []\n")
    res = runner.invoke(app, ["fl", "validate", str(bad)])
    assert res.exit_code == 2 and "study id must be lower-case" in " ".join(res.output.split())
    assert "Traceback" not in res.output
    sites = runner.invoke(app, ["fl", "simulate", str(good), "--sites", str(tmp_path)])
    assert sites.exit_code == 2 and "no site.npz" in " ".join(sites.output.split())


def test_intensity_augmentation_changes_tone_and_sharpness_reproducibly() -> None:
    """Each image is its source under one gamma in the stated range, then blurred or not by a
    normalised Gaussian (a flat image stays flat, a sharp edge softens); draws follow the seed,
    and the study key reaches the training step."""
    from pair.federated.core.site import train_config
    from pair.federated.core.train import GAMMA_RANGE, intensity_augment_batch

    x = torch.rand(32, 1, 16, 16) * 0.9 + 0.05
    out = intensity_augment_batch(x, torch.Generator().manual_seed(4))
    again = intensity_augment_batch(x, torch.Generator().manual_seed(4))
    assert out.shape == x.shape and torch.equal(out, again)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    blurred, gammas_seen = 0, []
    for i in range(32):
        # the image's gamma, from its brightest pixel mapped exactly when it was not blurred
        gammas = torch.log(out[i].clamp_min(1e-6)) / torch.log(x[i])
        if torch.allclose(gammas, gammas.flatten()[0].expand_as(gammas), atol=1e-4):
            g = float(gammas.flatten()[0])
            assert GAMMA_RANGE[0] - 1e-4 <= g <= GAMMA_RANGE[1] + 1e-4
            gammas_seen.append(g)
        else:  # blurred: smoother than any pure gamma of its source could be
            blurred += 1
            assert float(out[i].diff(dim=-1).abs().mean()) < float(x[i].diff(dim=-1).abs().mean())
    assert 0 < blurred < 32  # blur is drawn per image with probability ½
    assert min(gammas_seen) < 0.9 and max(gammas_seen) > 1.1  # the tone curve is drawn too
    flat = torch.full((4, 1, 16, 16), 0.5)
    assert torch.allclose(
        intensity_augment_batch(flat, torch.Generator().manual_seed(1)).amax(dim=(1, 2, 3)),
        intensity_augment_batch(flat, torch.Generator().manual_seed(1)).amin(dim=(1, 2, 3)),
        atol=1e-6,
    )
    study = parse_study(
        {**STUDY, "training": {**STUDY["training"], "intensity_augment": True}}, "t"
    )
    assert train_config(study, 0, 0).intensity_augment
    assert train_config(decode_study(study.encode()), 0, 0).intensity_augment
    assert not train_config(parse_study(STUDY, "t"), 0, 0).intensity_augment
    assert_reproducible_and_effective("intensity_augment")


def test_frozen_batchnorm_trains_with_the_global_statistics_from_the_set_round() -> None:
    """FixBN: from ``batchnorm_freeze_round`` on, local training leaves the model's BatchNorm
    statistics as received and normalises with them; weights still train; before that round,
    a site's batches update the statistics as usual."""
    from pair.federated.core.site import train_config

    study = parse_study(
        {**STUDY, "training": {**STUDY["training"], "rounds": 4, "batchnorm_freeze_round": 2}}, "t"
    )
    assert [train_config(study, r, 0).freeze_batchnorm for r in range(4)] == [0, 0, 1, 1]
    carried = decode_study(study.encode())  # what FLARE's clients receive
    assert [train_config(carried, r, 0).freeze_batchnorm for r in range(4)] == [0, 0, 1, 1]
    assert not train_config(parse_study(STUDY, "t"), 3, 0).freeze_batchnorm
    data = toy_data(32, shift=0.4)  # far from the fresh statistics (mean 0, variance 1)

    before = get_state(StudyNet("small_cnn", 1, 4))

    def trained(freeze: bool) -> State:
        return train_toy(before, data, TrainConfig(1, 8, lr=0.1, seed=5, freeze_batchnorm=freeze))

    frozen = trained(True)
    stats = [
        k for k in before if k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    ]
    assert stats and all(torch.equal(before[k], frozen[k]) for k in stats)
    weights = [k for k in before if k not in stats]
    assert any(not torch.equal(before[k], frozen[k]) for k in weights)
    usual = trained(False)
    assert any(not torch.equal(before[k], usual[k]) for k in stats)
    with pytest.raises(Invalid, match="batchnorm_freeze_round"):
        parse_study({**STUDY, "training": {**STUDY["training"], "batchnorm_freeze_round": -1}}, "t")
