"""The text-to-image model: hybrid DiT, rectified flow, autoencoder, text encoder, data, training, generation."""
