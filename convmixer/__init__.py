"""ConvMixer ("Patches Are All You Need?", Trockman & Kolter, 2022), annotated."""
from .costs import parameter_count
from .model import ARCHITECTURES, ConvMixer, ConvMixerConfig, convmixer

__all__ = ["ConvMixer", "ConvMixerConfig", "ARCHITECTURES", "convmixer", "parameter_count"]
__version__ = "0.1.0"
