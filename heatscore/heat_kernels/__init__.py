"""Heat kernels, forward (noising) samplers, heat-kernel embeddings and MMD."""

from heatscore.heat_kernels._conventions import (from_geometric_kernels, geometric_kernels_lengthscale,
                                                 geometric_kernels_time, igso3_angle_density,
                                                 igso3_log_density, igso3_sample, igso3_score,
                                                 igso3_time, to_geometric_kernels)
from heatscore.heat_kernels._embeddings import (diffusion_distance, diffusion_map,
                                                heat_kernel_signature, kernel_mean_embedding, mmd,
                                                mmd_permutation_test)
from heatscore.heat_kernels._kernel import HeatKernel
from heatscore.manifolds._heat_backends import spectral_sum
from heatscore.heat_kernels._sampling import sample_heat_kernel

__all__ = ["HeatKernel", "sample_heat_kernel", "spectral_sum", "kernel_mean_embedding",
           "heat_kernel_signature", "diffusion_map", "diffusion_distance", "mmd",
           "mmd_permutation_test", "igso3_time", "igso3_angle_density", "igso3_log_density",
           "igso3_score", "igso3_sample", "geometric_kernels_time", "geometric_kernels_lengthscale",
           "from_geometric_kernels", "to_geometric_kernels"]
