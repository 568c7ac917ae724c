"""sd-scripts' bucket selection and batches per epoch."""

from __future__ import annotations

from collections import Counter

from orchestrator.dataset.buckets import (BucketPlanner, BucketSettings, SubsetImages, batches, bucket_counts,
                                          bucket_resolutions)

B1024 = BucketSettings((1024, 1024), enable_bucket=True)


def test_bucket_resolutions_at_1024():
    resos = bucket_resolutions((1024, 1024), 256, 1024, 64)
    assert (1024, 1024) in resos and (768, 1024) in resos and (1024, 768) in resos and (256, 1024) in resos
    assert all(w * h <= 1024 * 1024 and w % 64 == 0 and h % 64 == 0 for w, h in resos)
    assert all(256 <= w <= 1024 and 256 <= h <= 1024 for w, h in resos)
    assert resos == sorted(resos) and len(resos) == len(set(resos))


def test_select_bucket_closest_aspect_and_cover_scale():
    p = BucketPlanner(B1024).place(4000, 3000)
    assert p.bucket == (1024, 768) and p.resized == (1024, 768) and p.cropped == 0
    p = BucketPlanner(B1024).place(800, 600)
    assert p.bucket == (1024, 768) and abs(p.scale - 1.28) < 1e-9
    p = BucketPlanner(B1024).place(3000, 4000)
    assert p.bucket == (768, 1024)


def test_without_buckets_everything_is_cropped_to_the_resolution():
    s = BucketSettings((1024, 1024), enable_bucket=False)
    p = BucketPlanner(s).place(1500, 1000)
    assert p.bucket == (1024, 1024) and p.resized == (1536, 1024)
    assert abs(p.cropped - (1 - 1024 / 1536)) < 1e-9


def test_no_upscale_keeps_small_images_and_shrinks_large_ones():
    s = BucketSettings((1024, 1024), enable_bucket=True, bucket_no_upscale=True)
    assert BucketPlanner(s).place(500, 300).bucket == (448, 256)
    big = BucketPlanner(s).place(4000, 3000)
    assert big.bucket[0] * big.bucket[1] <= 1024 * 1024 and big.bucket[0] % 64 == 0 and big.bucket[1] % 64 == 0
    assert big.scale < 1


def test_min_max_bucket_reso_rounded_like_sd_scripts():
    s = BucketSettings((1024, 1024), enable_bucket=True, min_bucket_reso=300, max_bucket_reso=1000).adjusted()
    assert (s.min_bucket_reso, s.max_bucket_reso) == (256, 1024)


def test_playbook_20_batches():
    counts = bucket_counts(B1024, [SubsetImages(((1024, 1024),) * 6, 1), SubsetImages(((1024, 1024),) * 7, 2)])
    assert counts == Counter({(1024, 1024): 20})
    assert batches(counts, 1) == 20 and batches(counts, 4) == 5


def test_each_bucket_rounds_up_on_its_own():
    subsets = [SubsetImages(((1024, 768),) * 3 + ((768, 1024),) * 3, 1)]
    assert batches(bucket_counts(B1024, subsets), 2) == 4  # ceil(3/2) + ceil(3/2), not ceil(6/2)
    no_buckets = BucketSettings((1024, 1024))
    assert batches(bucket_counts(no_buckets, subsets), 2) == 3


def test_reg_images_are_repeated_to_match_the_train_count():
    train = SubsetImages(((1024, 1024),) * 5, 2)
    reg = SubsetImages(((1024, 768),) * 3, 1, is_reg=True)
    counts = bucket_counts(B1024, [train, reg])
    assert counts == Counter({(1024, 1024): 10, (1024, 768): 10})
    few = bucket_counts(B1024, [SubsetImages(((1024, 1024),) * 2, 1), SubsetImages(((1024, 768),) * 5, 1, True)])
    assert few[(1024, 768)] == 2  # only as many reg samples as train samples


def test_skipped_subsets_do_not_count():
    counts = bucket_counts(B1024, [SubsetImages(((1024, 1024),) * 5, 0), SubsetImages((), 3)])
    assert batches(counts, 1) == 0
