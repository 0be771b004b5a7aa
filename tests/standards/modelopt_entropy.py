# SPDX-FileCopyrightText: Copyright (c) 2024 NVIDIA CORPORATION & AFFILIATES. All rights reserved.
# SPDX-License-Identifier: Apache-2.0
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
# http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

# NVIDIA's own implementation of TensorRT's entropy calibration (EntropyCalibration2), the
# oracle that tests/test_calibration_oracle.py checks trtforge.calibration.histogram against.
#
# Source: NVIDIA Model Optimizer, https://github.com/NVIDIA/Model-Optimizer (formerly
# NVIDIA/TensorRT-Model-Optimizer), modelopt/torch/quantization/calib/histogram.py, function
# text identical at commit 0af26b2a6f975222718c6bdd914a047442150803 and in the nvidia-modelopt
# 0.47.0 wheel it is copied from (nvidia_modelopt-0.47.0-py3-none-any.whl, sha256
# db13e62d7efe4a1512e8b8c3f479e28d64022306f94a194f13234e7dca1d3120). It is the successor of
# pytorch-quantization's function of the same name (NVIDIA/TensorRT,
# tools/pytorch-quantization/pytorch_quantization/calib/histogram.py), whose body differs only
# in formatting and a debug log line. License: Apache-2.0, header above.
#
# Adaptations, the only ones, so that it runs without torch:
# 1. Imports: only what this function uses (Counter, numpy, scipy.stats.entropy); the module's
#    torch and modelopt imports and its other functions are left out.
# 2. The last assignment returns the Python float ``calib_amax.item()`` instead of
#    ``torch.tensor(calib_amax.item())``.
#
# Note for callers: ``bins = calib_hist[:]`` is a view of a numpy array, so ``bins[0] = bins[1]``
# overwrites the caller's bin 0: pass a copy.

"""Histogram based calibrators."""

from collections import Counter

import numpy as np
from scipy.stats import entropy


def _compute_amax_entropy(calib_hist, calib_bin_edges, num_bits, unsigned, stride=1, start_bin=128):
    """Returns amax that minimizes KL-Divergence of the collected histogram."""
    # If calibrator hasn't collected any data, return none
    if calib_bin_edges is None and calib_hist is None:
        return None

    def _normalize_distr(distr):
        summ = np.sum(distr)
        if summ != 0:
            distr = distr / summ

    bins = calib_hist[:]
    bins[0] = bins[1]

    total_data = np.sum(bins)

    divergences = []
    arguments = []

    # we are quantizing to 128 values + sign if num_bits=8
    nbins = 1 << (num_bits - 1 + int(unsigned))

    starting = start_bin
    stop = len(bins)

    new_density_counts = np.zeros(nbins, dtype=np.float64)

    for i in range(starting, stop + 1, stride):
        new_density_counts.fill(0)
        space = np.linspace(0, i, num=nbins + 1)
        digitized_space = np.digitize(range(i), space) - 1

        digitized_space[bins[:i] == 0] = -1

        for idx, digitized in enumerate(digitized_space):
            if digitized != -1:
                new_density_counts[digitized] += bins[idx]

        counter = Counter(digitized_space)
        for key, val in counter.items():
            if key != -1:
                new_density_counts[key] = new_density_counts[key] / val

        new_density = np.zeros(i, dtype=np.float64)
        for idx, digitized in enumerate(digitized_space):
            if digitized != -1:
                new_density[idx] = new_density_counts[digitized]

        total_counts_new = np.sum(new_density) + np.sum(bins[i:])
        _normalize_distr(new_density)

        reference_density = np.array(bins[: len(digitized_space)])
        reference_density[-1] += np.sum(bins[i:])

        total_counts_old = np.sum(reference_density)
        if round(total_counts_new) != total_data or round(total_counts_old) != total_data:
            raise RuntimeError(
                f"Count mismatch! total_counts_new={total_counts_new}, "
                f"total_counts_old={total_counts_old}, total_data={total_data}"
            )

        _normalize_distr(reference_density)

        ent = entropy(reference_density, new_density)
        divergences.append(ent)
        arguments.append(i)

    divergences = np.array(divergences)
    last_argmin = len(divergences) - 1 - np.argmin(divergences[::-1])
    calib_amax = calib_bin_edges[last_argmin * stride + starting]
    calib_amax = calib_amax.item()

    return calib_amax
