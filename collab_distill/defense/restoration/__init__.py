"""Small image-restoration models, paired synthetic data, metrics and distillation loops: the
test bed of the ASVP study (docs/asvp.md); the defense itself is :mod:`collab_distill.defense.asvp`.

Modules: ``unet`` (compact residual UNet), ``data`` (adverse/clear pairs by condition), ``metrics``
(PSNR, SSIM), ``distill`` (teacher training, lockstep attacker distillation, evaluation), ``study``
(the restoration part of ``tools/asvp_study.py``).
"""
