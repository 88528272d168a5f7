"""Reproduction of "Stacking as Accelerated Gradient Descent" (Agarwal, Awasthi, Kale, Zhao, 2024).

Research code, not part of the growth library: ``theory`` holds the numpy experiments on the
paper's linear settings, ``reproduce.py`` runs them and writes the results, tables and plots.
"""
