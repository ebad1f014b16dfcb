"""The DBNet++ experiment files name a model this package builds."""
import os
import warnings

import pytest
import torch

from concern.config import get_path, load_config
from structure.builder import Builder

warnings.filterwarnings('ignore', message='assets.ops.dcn', category=RuntimeWarning)
ASF_FILES = ['experiments/ASF/td500_resnet50_deform_thre_asf.yaml',
             'experiments/ASF/ic15_resnet50_deform_thre_asf.yaml']


@pytest.mark.parametrize('path', ASF_FILES)
def test_asf_experiment_builds_a_dbnet_pp_model(path, monkeypatch):
    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    builder = get_path(load_config(path), 'structure.builder')
    model = Builder(builder['model'], builder['model_args']).build().eval()
    assert type(model.decoder).__name__ == 'SegSpatialScaleDetector'
    assert model.decoder.concat_attention.attention_type == 'scale_channel_spatial'
    assert model.decoder.k == 50
    # The mode follows the weights: 'auto' in the file, corrected until a checkpoint says otherwise.
    assert model.backbone.requested_offset_compat == 'auto'
    assert model.backbone.offset_compat == 'corrected'
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 64, 64)
