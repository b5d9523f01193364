"""samplers/guards.py: bad sigmas, TrigFlow angles, shifts and non-finite latents are clear errors (issue 15)."""

import math

import pytest
import torch

import samplers
from samplers import guards


@pytest.mark.parametrize("sigmas, fragment", [
    ([2.5, 1.0, 0.0], "sigma[0] = 2.5"),
    ([0.9, -0.166, 0.0], "sigma[1] = -0.166"),
    ([math.nan, 0.5, 0.0], "sigma[0] is nan"),
    ([0.9, math.inf, 0.0], "sigma[1] is inf"),
])
def test_bad_flow_sigmas_named(sigmas, fragment):
    with pytest.raises(ValueError, match="sana_flow") as error:
        guards.check_flow_sigmas(torch.tensor(sigmas), "flow_dpm_solver")
    assert fragment in str(error.value) and str(error.value).startswith("flow_dpm_solver")


def test_good_grids_pass():
    for sigmas in (samplers.sana_sigmas(20, 3.0), samplers.sprint_sigmas(2), samplers.sprint_sigmas(4),
                   samplers.flow_euler_sigmas(20, 3.0), torch.tensor([1.0, 0.5, 0.0])):
        guards.check_flow_sigmas(sigmas)
    assert float(samplers.sprint_sigmas(2)[0]) > 1  # 1.0000037: the tolerance is needed, not decorative


@pytest.mark.parametrize("angles", [[2.5, 1.3, 0.0], [1.6, 1.3, 0.0], [math.nan, 1.3, 0.0]])
def test_sprint_angles_beyond_half_pi_refused(angles):
    with pytest.raises(ValueError, match="π/2"):
        samplers.sprint_sigmas(2, angles=angles)


def test_sprint_reference_angle_accepted():
    sigmas = samplers.sprint_sigmas(2, angles=[1.5708, 1.3, 0.0])
    assert sigmas[0] > 1 and sigmas[-1] == 0


@pytest.mark.parametrize("shift", [math.inf, math.nan, 0.0, -1.0])
def test_bad_shift_refused(shift):
    with pytest.raises(ValueError, match="finite number > 0"):
        samplers.sana_sigmas(4, shift)


def test_nonfinite_step_names_step_dtype_and_fix():
    x = torch.zeros(1, 4, 2, 2)
    guards.check_finite_latent(x, 1, 4, 0.9, ("float16",))
    x[0, 0, 0, 0] = math.nan
    with pytest.raises(RuntimeError) as half:
        guards.check_finite_latent(x, 3, 4, 0.5, ("float16",), "flow_dpm_solver")
    message = str(half.value)
    assert "step 3/4" in message and "float16" in message and "use bf16 or fp32" in message
    with pytest.raises(RuntimeError) as full:
        guards.check_finite_latent(x, 1, 4, 0.5, ("bfloat16",))
    assert "fp16 overflow" not in str(full.value) and "re-download" in str(full.value)
