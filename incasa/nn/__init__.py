"""Stable building blocks shared by the models (attention, RoPE, RMSNorm, MLPs, modulation). Imports only torch."""
