"""vitlocal: how locality is brought into vision transformers, one mechanism per module.

Mechanisms: `lattice` (LocalViT's token lattice), `locality` (LocalViT's locality feed-forward),
`slide` (Slide-Transformer's im2col / shift / deformed shifting), `fusion` (CrossViT's
cross-attention), `convproj` (CvT's convolutional projection) and `attnconv` (CloFormer's AttnConv),
built on `attention` (multi-head attention on SDPA) and `layers` (small shared layers).
"""

__version__ = "0.1.0"
