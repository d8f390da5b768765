"""incasa: curate -> train -> evaluate -> serve generative models in-house, for images, voice and text."""

__version__ = "0.1.0"
