"""What the feature cache buys: one training epoch of the `features`
strategy's head on cached `block5_pool` outputs, beside one epoch of the same
head behind the frozen conv base on the images, side by side in one process.

```
python benchmarks/transfer_epoch.py                # VGG-16 at 224, 128 JPEGs, batch 64
python benchmarks/transfer_epoch.py --batch_size=16 --images=64 --out=...
python benchmarks/transfer_epoch.py --tiny --images=512   # the smoke run's network
```

Both epochs see the same images (real ~500x375 JPEGs cut from the photos
scikit-learn ships, decoded and centre-cropped as evaluation does), the same
batches and the same head; only where the base's output comes from differs.
Rounds alternate the two, so load on the machine hits both alike; the first
epoch of each (tracing) is not timed. Writes `results/transfer_epoch*.json`.
"""

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def folder_dataset(root, images, classes=4):
    """A folder dataset of `images` JPEGs in `classes` classes (train/ holds
    them all; val/ one per class, which the benchmark does not time)."""
    from benchmarks.cases_pipeline import make_jpegs

    paths = make_jpegs(os.path.join(root, "all"), images + classes)
    for i, path in enumerate(paths):
        split = "val" if i >= images else "train"
        folder = os.path.join(root, split, f"c{i % classes}")
        os.makedirs(folder, exist_ok=True)
        os.rename(path, os.path.join(folder, os.path.basename(path)))
    return root


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="the smoke run's network "
                   "(config A, widths 16-64, 32x32 inputs) instead of VGG-16 at 224")
    p.add_argument("--images", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=64,
                   help="the recipe's default")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    import keras

    import keras_vgg
    from keras_vgg.recipes import feature_cache, modeling, sources, transfer

    if args.tiny:
        arch = dict(model="A", batch_norm=True, widths=(16, 32, 64, 64, 64), fc_units=128,
                    image_size=32, eval_scale=36)
    else:
        arch = dict(model="D", batch_norm=False, widths=keras_vgg.models.WIDTHS,
                    fc_units=keras_vgg.models.FC_UNITS, image_size=224, eval_scale=256)
    cfg = transfer.TransferConfig(model_dir="", batch_size=args.batch_size, dropout=0.5,
                                  learning_rate=1e-2, **arch)
    keras.utils.set_random_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        source = sources.load_source(f"folder:{folder_dataset(tmp, args.images)}")
        split, size = source.train, cfg.image_size
        classifier = modeling.build_model(cfg, source.num_classes)
        base, head = feature_cache.split_model(classifier)
        started = time.perf_counter()
        outputs, labels = feature_cache.cached(
            os.path.join(tmp, "cache"), split, {"benchmark": True},
            feature_cache.base_outputs(base, split, image_size=size,
                                       smallest_side=cfg.eval_q,
                                       mean_rgb=(123.68, 116.779, 103.939),
                                       batch_size=args.batch_size), verbose=0)
        cache_seconds = time.perf_counter() - started
        steps = len(labels) // args.batch_size

        # (a) the head on the cache, as `features` trains it.
        modeling.compile_model(head, cfg, 1e-3)
        cached_ds = feature_cache.training_batches(
            outputs, labels, batch_size=args.batch_size, seed=0, initial_epoch=0,
            epochs=args.rounds + 1, steps_per_epoch=steps)
        cached_epochs = iter(range(args.rounds + 1))

        # (b) the same head behind the frozen base, on the images.
        for layer in classifier.layers[:classifier.layers.index(
                classifier.get_layer("block5_pool")) + 1]:
            layer.trainable = False
        modeling.compile_model(classifier, cfg, 1e-3)
        from keras_vgg.recipes import data as data_lib
        image_ds = data_lib.eval_pipeline(split, batch_size=args.batch_size,
                                          image_size=size, smallest_side=cfg.eval_q,
                                          mean_rgb=(123.68, 116.779, 103.939))
        image_ds = image_ds.take(steps).repeat()

        def epoch_on_cache():
            e = next(cached_epochs)
            head.fit(cached_ds, initial_epoch=e, epochs=e + 1, steps_per_epoch=steps,
                     verbose=0)

        def epoch_on_images():
            classifier.fit(image_ds, epochs=1, steps_per_epoch=steps, verbose=0)

        times = {"cache": [], "images": []}
        epoch_on_cache(), epoch_on_images()   # tracing, not timed
        for _ in range(args.rounds):
            for name, run in (("cache", epoch_on_cache), ("images", epoch_on_images)):
                t = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t)

        # The svm strategy's cost: Appendix B descriptors of a few images.
        from keras_vgg.recipes import svm
        scales = (36, 48, 64) if args.tiny else (256, 384, 512)
        descriptor = svm.descriptor_model([classifier], scales)
        few = split.size if args.tiny else min(4, split.size)
        few_split = sources.Split("few", split.examples.take(few), few, "few")
        batches = svm.descriptor_batches(descriptor, few_split,
                                         mean_rgb=(123.68, 116.779, 103.939),
                                         batch_size=2)
        list(batches())  # tracing
        t = time.perf_counter()
        list(batches())
        descriptor_seconds = (time.perf_counter() - t) / few
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "network": "tiny (config A+BN, widths 16-64, 32x32)" if args.tiny else
                   "VGG-16 (config D), 224x224",
        "images": args.images, "batch_size": args.batch_size, "rounds": args.rounds,
        "cpu_cores": os.cpu_count(), "cache_once_seconds": round(cache_seconds, 2),
        "epoch_seconds_on_cache": [round(t, 3) for t in times["cache"]],
        "epoch_seconds_frozen_base": [round(t, 3) for t in times["images"]],
        "speedup_median": round(med["images"] / med["cache"], 1),
        "speedup_worst": round(min(times["images"]) / max(times["cache"]), 1),
        "cache_seconds_per_image": round(cache_seconds / args.images, 4),
        "svm_descriptor_scales": list(scales),
        "svm_descriptor_seconds_per_image": round(descriptor_seconds, 4),
        "command": "python benchmarks/transfer_epoch.py " + " ".join(argv or sys.argv[1:]),
    }
    out = args.out or str(ROOT / "benchmarks" / "results" /
                          f"transfer_epoch{'_tiny' if args.tiny else ''}.json")
    pathlib.Path(out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['network']}, {args.images} images, batch {args.batch_size}: an "
          f"epoch takes {med['cache']:.2f} s on the cache, {med['images']:.2f} s "
          f"through the frozen base: {result['speedup_median']}x (worst round "
          f"{result['speedup_worst']}x); caching once took {cache_seconds:.1f} s; an "
          f"Appendix B descriptor at Q={scales} takes {descriptor_seconds:.2f} s. "
          f"Wrote {out}")
    return result


if __name__ == "__main__":
    main()
