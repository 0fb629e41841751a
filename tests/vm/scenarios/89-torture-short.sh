# The short torture run: four rounds of the seeded fault schedule of `make torture`
# (tests/vm/torture.sh), every replica snapshot checked for write-order fidelity.
# A fixed seed, so a failure here reproduces with `make torture SEED=89 N=4`.
exec bash "$(dirname "$0")/../torture.sh" 89 4
