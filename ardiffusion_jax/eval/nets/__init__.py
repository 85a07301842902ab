"""The fixed networks metrics and losses are computed with (never trained here): FID's
InceptionV3, FID-vid's 3D ResNet-50 and LPIPS' VGG-16. Their weights come from the
PyTorch releases through `ardiff convert`."""
