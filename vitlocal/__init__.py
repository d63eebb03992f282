"""vitlocal: how locality is brought into vision transformers, one mechanism per module.

Mechanisms: `lattice` (LocalViT's token lattice), `locality` (LocalViT's locality feed-forward),
`slide` (Slide-Transformer's im2col / shift / deformed shifting), `fusion` (CrossViT's
cross-attention), `convproj` (CvT's convolutional projection) and `attnconv` (CloFormer's AttnConv),
built on `attention` (multi-head attention on SDPA) and `layers` (small shared layers).

Models: ``create_model(name, **overrides)``, ``list_models()``; released checkpoints (the authors' or timm's):
``load_official(model, checkpoint)`` and ``export_official(model)``; the CPU presets trained on 32 px
Imagenette that ship with the package: ``load_trained(name)``, ``list_trained()``.
"""

__version__ = "0.1.0"

from vitlocal.models import create_model, list_models
from vitlocal.models.official import export_official, load_official
from vitlocal.pretrained import list_trained, load_trained

__all__ = ["create_model", "list_models", "load_official", "export_official", "load_trained", "list_trained"]
