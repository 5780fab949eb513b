"""Neural networks shared by the generators: the one U-Net family (``vfbench.nets.unet``)."""

from vfbench.nets.unet import UNet, UNetConfig, count_parameters, unet_preset, unet_preset_names

__all__ = ["UNet", "UNetConfig", "count_parameters", "unet_preset", "unet_preset_names"]
