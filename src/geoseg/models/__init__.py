"""Neural network modules (``nn.Module`` only): backbone, TATE, memories, mask decoder, UniGeoSeg."""

from geoseg.models.backbone import FPN, ConvBackbone
from geoseg.models.decoder import MaskDecoder, render_prompt_map
from geoseg.models.memory import ClassWiseMemory, LatentKnowledgeMemory
from geoseg.models.tate import TASK_IDS, TATE
from geoseg.models.unigeoseg import UniGeoSeg

__all__ = ["FPN", "TASK_IDS", "TATE", "ClassWiseMemory", "ConvBackbone", "LatentKnowledgeMemory", "MaskDecoder",
           "UniGeoSeg", "render_prompt_map"]
