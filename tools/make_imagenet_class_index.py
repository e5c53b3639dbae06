"""Regenerate ``keras_vgg/data/imagenet_class_index.json`` from timm's data files.

keras.applications downloads ``imagenet_class_index.json`` at run time; this
package bundles an equivalent file so ``decode_predictions`` works offline. The
file is rebuilt from two text files that the ``timm`` wheel (Apache-2.0) ships:

* ``timm/data/_info/imagenet_synsets.txt``: the 1000 ILSVRC-2012 WordNet synset
  ids, one per line, in the canonical class-index order (sorted by id);
* ``timm/data/_info/imagenet_synset_to_lemma.txt``: ``<synset>\\t<lemmas>`` with
  the synset's WordNet lemmas separated by ", ".

The class name is the first lemma with spaces replaced by underscores, which
is what keras's file contains. With ``json.dumps``' default separators and no
trailing newline, the output is byte-for-byte keras's file (md5
``c2c37ea517e94d9795004a39431a14cb``, checked with timm 1.0.31).

Usage (timm need not be installed; the wheel is read as a zip archive)::

    pip download --no-deps timm -d /tmp/timm_whl
    python tools/make_imagenet_class_index.py /tmp/timm_whl/timm-*.whl

    # or from an installed timm, or an unpacked tree containing timm/data/_info
    python tools/make_imagenet_class_index.py installed
    python tools/make_imagenet_class_index.py /path/to/site-packages

The script prints the md5 of the file it wrote and exits with status 1 if it
differs from keras's (pass ``--no-check`` to only print it).
"""

import argparse
import hashlib
import json
import pathlib
import sys
import zipfile

KERAS_MD5 = "c2c37ea517e94d9795004a39431a14cb"
SYNSETS = "timm/data/_info/imagenet_synsets.txt"
LEMMAS = "timm/data/_info/imagenet_synset_to_lemma.txt"
DEFAULT_OUTPUT = (
    pathlib.Path(__file__).resolve().parent.parent
    / "keras_vgg"
    / "data"
    / "imagenet_class_index.json"
)


def _read_sources(source):
    """Returns the text of (synsets file, lemma file) from `source`.

    Args:
        source: Path to a timm wheel (``.whl``), a directory containing
            ``timm/data/_info`` (e.g. site-packages or an unpacked wheel), or
            the word ``installed`` to use the timm importable here.

    Returns:
        A pair of strings.
    """
    if source == "installed":
        import timm  # only imported on request: timm is not a dependency.

        root = pathlib.Path(timm.__file__).resolve().parent.parent
        return tuple((root / name).read_text("utf-8") for name in (SYNSETS, LEMMAS))
    path = pathlib.Path(source)
    if path.is_file():
        with zipfile.ZipFile(path) as wheel:
            return tuple(wheel.read(name).decode("utf-8") for name in (SYNSETS, LEMMAS))
    if path.is_dir():
        return tuple((path / name).read_text("utf-8") for name in (SYNSETS, LEMMAS))
    raise SystemExit(f"{source!r} is neither a timm wheel, a directory nor 'installed'.")


def build_class_index(synsets_text, lemmas_text):
    """Builds keras's class-index mapping from timm's two text files.

    Args:
        synsets_text: Content of ``imagenet_synsets.txt``.
        lemmas_text: Content of ``imagenet_synset_to_lemma.txt``.

    Returns:
        A dict ``{"0": [synset_id, class_name], ..., "999": [...]}`` in index
        order (insertion order is what json.dumps writes, so it matters).
    """
    synsets = [line.strip() for line in synsets_text.splitlines() if line.strip()]
    if len(synsets) != 1000 or len(set(synsets)) != 1000:
        raise SystemExit(f"Expected 1000 unique synsets, got {len(synsets)}.")
    lemmas = {}
    for line in lemmas_text.splitlines():
        if line.strip():
            synset, _, names = line.partition("\t")
            lemmas[synset] = names
    missing = [s for s in synsets if s not in lemmas]
    if missing:
        raise SystemExit(f"Synsets without lemmas: {missing[:10]}")
    return {
        str(i): [s, lemmas[s].split(",")[0].strip().replace(" ", "_")]
        for i, s in enumerate(synsets)
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", help="timm wheel, directory, or 'installed'")
    parser.add_argument("-o", "--output", type=pathlib.Path, default=DEFAULT_OUTPUT)
    parser.add_argument(
        "--no-check",
        action="store_true",
        help=f"do not fail when the md5 differs from keras's ({KERAS_MD5})",
    )
    args = parser.parse_args(argv)

    index = build_class_index(*_read_sources(args.source))
    # Default separators (", ", ": "), ASCII escaping, no indent and no
    # trailing newline: the formatting of keras's downloaded file.
    data = json.dumps(index).encode("utf-8")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(data)
    md5 = hashlib.md5(data).hexdigest()
    print(f"wrote {args.output} ({len(data)} bytes)")
    print(f"md5 {md5} ({'matches' if md5 == KERAS_MD5 else 'DIFFERS from'} keras's)")
    if md5 != KERAS_MD5 and not args.no_check:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
