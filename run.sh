#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Set up and run moed's main job on a fresh Debian 12 machine: install the
# packages, build, write the default model (8 experts, top-2, SiLU-gated,
# Mixtral names, with an input batch) and run a batch through each of its MoE
# layers with the embedded engine (moectl forward), printing what happened.
# Later issues put the daemon and a client workload behind this same command.
set -euo pipefail
cd "$(dirname "$0")"
.ci/install-deps.sh
cmake -S . -B build >/dev/null
cmake --build build -j "$(nproc)"
moectl=build/daemon/moectl
state=build/state
mkdir -p "$state"
[ -f "$state/default-model.safetensors" ] ||
	"$moectl" gen-model --output "$state/default-model.safetensors" --tokens 64
for layer in 0 1; do
	"$moectl" forward --model "$state/default-model.safetensors" \
		--input "$state/default-model.safetensors" \
		--output "$state/result-layer$layer.safetensors" --layer "$layer"
done
echo "results in $state/result-layer{0,1}.safetensors"
