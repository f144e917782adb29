"""Data: the embedded handwritten digits on a larger canvas (:mod:`.digits`), your own images as
a torchvision ``ImageFolder`` datamodule for the recipes (:mod:`.image_folder`) and images from
disk for a scan on the command line (:mod:`.image_files`)."""
from .digits import DigitsCanvas, DigitsCanvasDataModule, LitDigitsCanvasDataModule

__all__ = ["DigitsCanvas", "DigitsCanvasDataModule", "LitDigitsCanvasDataModule"]
