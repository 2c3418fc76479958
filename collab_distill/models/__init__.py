"""Models: timm image encoder, spconv point encoder, projection heads."""
