"""pan_repair: find and repair Padding Aware Neurons."""
__version__ = "0.1.0"
