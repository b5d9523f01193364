"""Pure-PyTorch samplers and sigma schedules for flow-matching Sana models (k-diffusion contract)."""
