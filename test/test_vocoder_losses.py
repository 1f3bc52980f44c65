"""HiFi-GAN discriminators and losses: shapes, LSGAN targets, feature matching, log-mel."""

import torch

from sofa_speechlm.vocoder.discriminators import MultiPeriodDiscriminator, MultiScaleDiscriminator, PeriodDiscriminator
from sofa_speechlm.vocoder.losses import LogMel, adversarial_loss, discriminator_loss, feature_matching_loss
from vocoder_testutils import tiny_config


def test_discriminators_return_logits_and_feature_maps_per_sub_discriminator():
    real, fake = torch.randn(2, 2000), torch.randn(2, 2000)
    for discriminator, count, maps in ((MultiPeriodDiscriminator(1 / 32), 5, 6), (MultiScaleDiscriminator(1 / 32), 3, 8)):
        real_logits, fake_logits, real_maps, fake_maps = discriminator(real, fake)
        assert len(real_logits) == len(fake_logits) == count
        assert all(len(m) == maps for m in real_maps + fake_maps)
        assert all(logits.shape[0] == 2 and logits.dim() == 2 for logits in real_logits + fake_logits)


def test_full_size_period_discriminator_has_hifigan_channels():
    period = PeriodDiscriminator(2)
    assert [conv.out_channels for conv in period.convs] == [32, 128, 512, 1024, 1024]


def test_lsgan_losses_vanish_at_their_targets():
    ones, zeros = [torch.ones(2, 5)], [torch.zeros(2, 5)]
    assert discriminator_loss(ones, zeros) == 0 and adversarial_loss(ones) == 0
    assert discriminator_loss(zeros, ones) == 2 and adversarial_loss(zeros) == 1
    maps = [[torch.randn(2, 3, 4), torch.randn(2, 5)]]
    assert feature_matching_loss(maps, maps) == 0
    assert feature_matching_loss(maps, [[m + 1 for m in maps[0]]]) == 2


def test_log_mel_shape_and_floor():
    mel = LogMel(tiny_config())(torch.zeros(1, 16000))
    assert mel.shape == (1, 80, 16000 // 256 + 1)
    torch.testing.assert_close(mel, torch.full_like(mel, torch.log(torch.tensor(1e-5)).item()))
