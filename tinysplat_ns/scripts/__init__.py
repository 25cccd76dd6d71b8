"""TinySplat's console scripts. They render and train on torch's OpenMP threads, so before any of them
imports torch: idle threads spin only briefly (tinysplat_ns.openmp)."""

from tinysplat_ns.openmp import spin_briefly

spin_briefly()
