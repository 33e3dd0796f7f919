"""Decision logic (torch-free): what a score means and whether a model may ship.

``scoring`` runs any engine over a split; ``metrics`` computes AUCs, calibration and paired CIs;
``operating`` fits calibration and operating points on the tuning split; ``drift`` builds the
per-finding, per-slice table that ``gate`` judges; ``guard`` decides whether an input is in
scope; ``evaluation`` puts them together for ``mxa-edge eval``.
"""
