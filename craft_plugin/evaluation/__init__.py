"""Evaluation of trained backbones: IJB-B/IJB-C (1:1 and 1:N), .bin verification sets, A/B comparison."""
