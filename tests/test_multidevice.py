"""The same run on 1 and on 4 (fake CPU) devices: the batch is split over the data axis, the result is the same."""

import numpy as np

from conftest import QUICK, read_metrics, run_cli


def test_four_devices_give_the_per_step_losses_of_one(tmp_path, mnist_available):
    losses = {}
    for devices in (1, 4):
        workdir = tmp_path / f"devices{devices}"
        result = run_cli(
            "--experiment=mnist_cnn",
            f"--workdir={workdir}",
            *QUICK,
            "--config.train.max_steps=10",
            "--config.train.log_every_steps=1",
            env={"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"},
        )
        assert result.returncode == 0, result.stderr
        assert f"{devices} device(s)" in result.stderr
        metrics = read_metrics(workdir)
        losses[devices] = [m["loss"] for m in metrics if m["split"] == "train"] + [metrics[-1]["loss"]]
    assert len(losses[1]) == 11
    # Only the order of floating-point sums differs (per-device partial sums, then an all-reduce).
    np.testing.assert_allclose(losses[4], losses[1], rtol=2e-5)
