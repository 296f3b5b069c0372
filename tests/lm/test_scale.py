"""ΔC past one pass: merged halves, saved and loaded files, a run killed and resumed, and two processes on
torch.distributed (gloo) all equal one uninterrupted pass (issue 16)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qkcore.covariance import ContrastiveCovariance
from qkcore.lm import DeltaStreamer, stream_delta, tiny_model
from qkcore.lm.identity import model_identity

sys.path.insert(0, str(Path(__file__).parent / "scripts"))
from stream_worker import workload  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def child_env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return env


@pytest.fixture(scope="module")
def single_pass():
    model, prompts, pairs = workload()
    return model, prompts, pairs, stream_delta(model, None, prompts, pairs, batch_size=2)


def dyadic(shape, g):
    """Values k / 256 with |k| <= 512: float64 sums of their products are exact in any order."""
    return torch.randint(-512, 513, shape, generator=g).double() / 256


def test_merging_two_halves_equals_one_pass_exactly():
    g = torch.Generator().manual_seed(0)
    q, k = dyadic((3, 40, 8), g), dyadic((3, 40, 8), g)  # (heads, pairs, d)
    whole, first, second = (ContrastiveCovariance(8, head_shape=(3,), weighting="prompt_sum") for _ in range(3))
    for start in range(0, 40, 5):  # 8 batches of 5 pairs; the first 4 go to one half, the rest to the other
        for acc in (whole, first if start < 20 else second):
            acc.add(q[:, start : start + 5], k[:, start : start + 5], positive=start % 10 == 0, prompts=1)
    merged = first.merge(second)
    assert merged is first
    assert torch.equal(merged.delta(), whole.delta())
    assert merged.pairs == whole.pairs and merged.prompts == whole.prompts
    assert torch.equal(merged.mean_share(), whole.mean_share())


def test_merge_refuses_other_definitions_and_itself():
    a, b = ContrastiveCovariance(4), ContrastiveCovariance(4, weighting="prompt_sum")
    with pytest.raises(ValueError, match="different definitions.*weighting"):
        a.merge(b)
    with pytest.raises(ValueError, match="itself: every pair would be counted twice"):
        a.merge(a)
    with pytest.raises(TypeError, match="other must be a ContrastiveCovariance"):
        a.merge(torch.zeros(4, 4))


def test_accumulator_file_round_trip_and_identity_checks(tmp_path):
    g = torch.Generator().manual_seed(1)
    acc = ContrastiveCovariance(5, head_shape=(2,))
    acc.add(torch.randn(2, 9, 5, generator=g), torch.randn(2, 9, 5, generator=g), positive=True)
    acc.add(torch.randn(2, 4, 5, generator=g), torch.randn(2, 4, 5, generator=g), positive=False)
    path = acc.save(tmp_path / "dc.pt", model={"name": "m"}, contrast={"feature": "colour"})
    back = ContrastiveCovariance.load(path, model={"name": "m"}, contrast={"feature": "colour"})
    assert torch.equal(back.delta(), acc.delta()) and back.pairs == acc.pairs
    with pytest.raises(ValueError, match="made for another model.*name: file 'm' vs now 'n'"):
        ContrastiveCovariance.load(path, model={"name": "n"})
    with pytest.raises(ValueError, match="made for another contrast"):
        ContrastiveCovariance.load(path, contrast={"feature": "shape"})
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError, match=r"cut\.pt \(300 bytes\) is not a readable qkcore accumulator file"):
        ContrastiveCovariance.load(tmp_path / "cut.pt")


def test_streamer_halves_merge_and_file_equal_one_pass(single_pass, tmp_path):
    model, prompts, pairs, whole = single_pass
    first = stream_delta(model, None, prompts[:6], pairs[:6], batch_size=2)
    second = stream_delta(model, None, prompts[6:], pairs[6:], batch_size=2)
    merged = first.merge(second)
    torch.testing.assert_close(merged.delta(), whole.delta(), rtol=1e-13, atol=1e-15)
    assert merged.acc.pairs == whole.acc.pairs and merged.prompts_seen == 13
    merged.save(tmp_path / "st.pt", contrast={"what": "test"})
    back = DeltaStreamer.load(tmp_path / "st.pt", model, contrast={"what": "test"})
    assert torch.equal(back.delta(), merged.delta()) and back.heads == merged.heads
    other = tiny_model("llama", seed=1)
    assert model_identity(other) != model_identity(model)
    with pytest.raises(ValueError, match="made for another model.*weights_sha256"):
        DeltaStreamer.load(tmp_path / "st.pt", other)


def run_worker(*args, timeout=300):
    return subprocess.run(
        [sys.executable, str(Path(__file__).parent / "scripts" / "stream_worker.py"), *map(str, args)],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_killed_capture_resumes_with_nothing_lost_or_counted_twice(single_pass, tmp_path):
    _, _, _, whole = single_pass
    ckpt, out = tmp_path / "run.pt", tmp_path / "out.pt"
    # 7 batches, checkpoints after batches 2, 4, 6, 7; killed when the 6th batch starts (5 absorbed, 4 saved)
    killed = run_worker("resume", out, ckpt, 6)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert ckpt.exists() and not out.exists()
    resumed = run_worker("resume", out, ckpt)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    got = torch.load(out, weights_only=True)
    assert got["calls"] == 3  # batches 5, 6, 7 run again after the checkpoint of 4; none before it
    assert got["pairs"] == whole.acc.pairs and got["prompts_seen"] == whole.prompts_seen == 13
    assert torch.equal(got["delta"], whole.delta())  # same additions in the same order: bit for bit


def test_resume_refuses_a_checkpoint_of_other_prompts(single_pass, tmp_path):
    model, prompts, pairs, _ = single_pass
    stream_delta(model, None, prompts, pairs, batch_size=2, checkpoint=tmp_path / "c.pt")
    with pytest.raises(ValueError, match="made for another contrast.*prompts_sha256"):
        stream_delta(model, None, prompts[:-1], pairs[:-1], batch_size=2, checkpoint=tmp_path / "c.pt")
    with pytest.raises(ValueError, match="made for another contrast.*settings"):
        stream_delta(model, None, prompts, pairs, batch_size=3, checkpoint=tmp_path / "c.pt")
    with pytest.raises(ValueError, match="checkpoint_every must be an int >= 1"):
        stream_delta(model, None, prompts, pairs, checkpoint=tmp_path / "d.pt", checkpoint_every=0)


def test_two_processes_on_gloo_equal_one_process(single_pass, tmp_path):
    model, _, _, whole = single_pass
    out = tmp_path / "dist.pt"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(Path(__file__).parent / "scripts" / "stream_worker.py"),
            "dist",
            str(out),
        ],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    got = DeltaStreamer.load(out, model)
    assert got.acc.pairs == whole.acc.pairs and got.prompts_seen == 13
    # the same batches, summed in another order: equal to float64 rounding
    torch.testing.assert_close(got.delta(), whole.delta(), rtol=1e-13, atol=1e-15)


def test_distributed_without_init_is_a_clear_error(single_pass):
    from qkcore.lm.distributed import stream_delta_distributed

    model, prompts, pairs, _ = single_pass
    with pytest.raises(RuntimeError, match="torch.distributed is not initialised; launch with torchrun"):
        stream_delta_distributed(model, None, prompts, pairs)


def test_per_layer_accumulators_equal_one_accumulator(single_pass, tmp_path):
    """The device_map layout (one accumulator per layer, on that layer's device), run here with every layer on the
    CPU: the same sums, merge, state and files as one accumulator. A model over two real devices was not available."""
    model, prompts, pairs, whole = single_pass
    assert whole.layer_accs is None  # one device: one accumulator, as before
    split = DeltaStreamer(model, per_layer=True)
    assert [a.sums[True].device for a in split.layer_accs.values()] == [
        layer.self_attn.q_proj.weight.device for layer in model.model.layers
    ]
    stream_delta_into(split, prompts[:6], pairs[:6])
    rest = DeltaStreamer(model, per_layer=True)
    stream_delta_into(rest, prompts[6:], pairs[6:])
    split.merge(rest)
    torch.testing.assert_close(split.delta(), whole.delta(), rtol=1e-13, atol=1e-15)
    assert split.acc.pairs == whole.acc.pairs and split.prompts_seen == 13
    split.save(tmp_path / "split.pt")
    back = DeltaStreamer.load(tmp_path / "split.pt", model)  # read into one accumulator
    assert torch.equal(back.delta(), split.delta())
    again = DeltaStreamer(model, per_layer=True)
    again.load_state_dict(back.state_dict())  # and back into per-layer ones
    assert torch.equal(again.delta(), split.delta())
    with pytest.raises(TypeError, match="per_layer must be True, False or None"):
        DeltaStreamer(model, per_layer="yes")


def stream_delta_into(streamer, prompts, pairs):
    from qkcore.lm import pad_batch

    for start in range(0, len(prompts), 2):
        streamer.add(pad_batch(prompts[start : start + 2], "left"), pairs[start : start + 2])
