"""Per-image stage and ingest: every rejection reason of these stages, EXIF stripping, depth pairing, categories."""

import io
import os
import tarfile

import numpy as np
import pytest
from PIL import Image

from incasa.data import categories as cat
from incasa.data import dejavu
from incasa.data.ingest import Loaded, Rejection, enumerate_sources, read_records
from incasa.data.metadata import MetadataConfig, analyse, jpeg_has_hidden_metadata, rewrite_jpeg_app1
from tests.data.helpers import depth_png, jpeg_with_exif, picture, png_bytes


def run_one(data: bytes, depth: bytes | None = None, ext: str = ".png", cfg=MetadataConfig(), label=None):
    return analyse("k", Loaded(data, depth, ext if depth is not None else "", None), label, cfg)


def test_truncated_corrupt_and_non_image_bytes_are_rejected_with_their_reason():
    good = jpeg_with_exif(picture(1, (256, 192)))
    assert run_one(good[: len(good) // 2]).reason == "corrupt"
    assert run_one(b"%PDF-1.4 definitely not an image").reason == "not_image"
    assert run_one(png_bytes(picture(1))[:60]).reason == "corrupt"


def test_decompression_bombs_are_rejected_by_pillows_limit():
    bomb = png_bytes(Image.new("L", (400, 400)))  # 160k pixels, compresses to almost nothing
    r = run_one(bomb, cfg=MetadataConfig(max_pixels=10_000))
    assert isinstance(r, Rejection) and r.reason == "decompression_bomb"
    r = run_one(bomb, cfg=MetadataConfig(max_pixels=100_000))  # between 1x and 2x the limit: Pillow only warns
    assert isinstance(r, Rejection) and r.reason == "decompression_bomb"
    assert isinstance(run_one(bomb, cfg=MetadataConfig(max_pixels=200_000)), dict)


def test_gps_and_personal_exif_are_stripped_from_the_stored_jpeg_losslessly():
    original = jpeg_with_exif(picture(2, (96, 64)))
    row = run_one(original)
    stored = Image.open(io.BytesIO(row["image"]))
    exif = stored.getexif()
    assert 0x8825 not in exif and 0x013B not in exif  # GPS block and Artist gone
    assert 0xA431 not in exif.get_ifd(0x8769)  # body serial number gone
    assert exif[0x010F] == "Canon" and abs(float(exif.get_ifd(0x8769)[0x829A]) - 0.004) < 1e-9  # camera kept
    # the pixels are untouched: only APP1 changed
    assert np.array_equal(np.asarray(stored), np.asarray(Image.open(io.BytesIO(original))))
    assert '"camera_make": "Canon"' in row["exif"] and row["category"] == "photo"
    kept = run_one(original, cfg=MetadataConfig(keep_personal_exif=True))
    assert kept["image"] == original


def test_png_with_gps_is_reencoded_losslessly_without_it():
    exif = Image.Exif()
    exif.get_ifd(0x8825)[1] = "N"
    buf = io.BytesIO()
    picture(3).save(buf, "PNG", exif=exif.tobytes())
    row = run_one(buf.getvalue())
    stored = Image.open(io.BytesIO(row["image"]))
    assert 0x8825 not in stored.getexif()
    assert np.array_equal(np.asarray(stored.convert("RGB")), np.asarray(picture(3)))


def test_a_second_exif_block_or_xmp_cannot_smuggle_gps_through():
    original = jpeg_with_exif(picture(11))
    decoy = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08" + b"\x00\x00"  # a valid, empty first EXIF block
    data = original[:2] + b"\xff\xe1" + (len(decoy) + 2).to_bytes(2, "big") + decoy + original[2:]
    assert 0x8825 not in Image.open(io.BytesIO(data)).getexif()  # Pillow only sees the decoy...
    assert jpeg_has_hidden_metadata(data)
    stored = run_one(data)["image"]
    assert not jpeg_has_hidden_metadata(stored)  # ...and the GPS-bearing second block is gone from the output
    assert b"Canon" not in stored and np.array_equal(np.asarray(Image.open(io.BytesIO(stored))),
                                                     np.asarray(Image.open(io.BytesIO(original))))


def test_a_hostile_record_is_logged_not_fatal(tmp_path):
    import pyarrow.parquet as pq

    from incasa.data.ingest import Record
    from incasa.data.pipeline import ChunkTask, analyse_chunk

    (tmp_path / "ok.png").write_bytes(png_bytes(picture(12)))
    (tmp_path / "bad.jpg").write_bytes(jpeg_with_exif(picture(13))[:300])
    records = (Record(f"file:{tmp_path}/bad.jpg", "file", str(tmp_path / "bad.jpg")),
               Record(f"file:{tmp_path}/gone.png", "file", str(tmp_path / "gone.png")),
               Record(f"file:{tmp_path}/ok.png", "file", str(tmp_path / "ok.png")))
    path = analyse_chunk(ChunkTask(str(tmp_path / "part.parquet"), records, MetadataConfig(), None))
    rows = pq.read_table(path, columns=["key", "status", "reason"]).to_pylist()
    assert [(r["status"], r["reason"]) for r in rows] == [("rejected", "corrupt"), ("rejected", "unreadable"),
                                                          ("ok", None)]


def test_rewrite_jpeg_app1_drops_xmp():
    data = jpeg_with_exif(picture(4))
    xmp = b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta>GPSLatitude</x:xmpmeta>"
    with_xmp = data[:2] + b"\xff\xe1" + (len(xmp) + 2).to_bytes(2, "big") + xmp + data[2:]
    assert b"GPSLatitude" not in rewrite_jpeg_app1(with_xmp, b"")


def test_depth_maps_are_validated():
    image = png_bytes(picture(5, (64, 48)))
    assert run_one(image, depth_png((128, 96)))["depth_ext"] == "png"  # same aspect, other size: fine
    assert run_one(image, depth_png((48, 48))).reason == "bad_depth"  # other aspect
    assert run_one(image, png_bytes(picture(6, (64, 48)))).reason == "bad_depth"  # RGB is not a depth map
    import OpenEXR

    z = np.ones((48, 64), np.float32)
    for values, ok in ((z, True), (np.where(np.eye(48, 64) > 0, np.nan, z).astype(np.float32), False)):
        buf = io.BytesIO()
        with OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage},
                          {"Z": values}) as f:
            f.write(buf)
        r = run_one(image, buf.getvalue(), ".exr")
        assert isinstance(r, dict) == ok, r


def test_folder_ingest_pairs_depth_and_captions_and_rejects_loops(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.png").write_bytes(png_bytes(picture(7)))
    (src / "a.depth.png").write_bytes(depth_png((64, 48)))
    (src / "a.txt").write_text("a caption\n")
    (src / "sub" / "b.jpg").write_bytes(jpeg_with_exif(picture(8)))
    (src / "sub" / "b.json").write_text('{"caption": "json caption"}')
    (src / "notes.pdf").write_bytes(b"%PDF")
    os.symlink(src, src / "sub" / "loop")  # a directory loop
    os.symlink(src / "self", src / "self")  # a self-referencing link
    os.symlink(src / "missing.png", src / "dangling.png")
    records, rejections = enumerate_sources([src])
    assert [r.key.rsplit("/", 1)[1] for r in records] == ["a.png", "b.jpg"]
    reasons = {r.key.rsplit("/", 1)[1]: r.reason for r in rejections}
    assert reasons == {"loop": "symlink_loop", "self": "symlink_loop", "dangling.png": "unreadable",
                       "notes.pdf": "not_image"}
    loaded = read_records(records)
    assert loaded[0].caption == "a caption" and loaded[0].depth is not None
    assert loaded[1].caption == "json caption" and loaded[1].depth is None


def test_tar_and_manifest_sources(tmp_path):
    shard = tmp_path / "in.tar"
    with tarfile.open(shard, "w") as tar:
        for name, data in (("x/001.png", png_bytes(picture(9))), ("x/001.txt", b"from tar"),
                           ("x/002.jpg", b"broken"), ("x/003.cls", b"7")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (tmp_path / "m.png").write_bytes(png_bytes(picture(10)))
    (tmp_path / "m.csv").write_text("path,caption,label\nm.png,a painting,painting\nnope.png,,\n")
    records, rejections = enumerate_sources([shard, tmp_path / "m.csv"])
    assert sorted(r.reason for r in rejections) == ["not_image", "unreadable"]
    by_key = {r.key.rsplit("#", 1)[1]: r for r in records}
    assert set(by_key) == {"x/001.png", "x/002.jpg", "0"}
    assert by_key["0"].label == "painting" and by_key["0"].caption == "a painting"
    loaded = read_records(list(records))
    assert [getattr(x, "caption", None) for x in loaded] == ["a painting", "from tar", None]
    with pytest.raises(ValueError, match="no such file"):
        enumerate_sources([tmp_path / "absent"])


def test_categories_from_label_cues_and_a_trained_classifier():
    raw = np.zeros(548, np.float32)
    assert cat.categorize("3D", {}, False, raw, None) == ("render", "label")
    assert cat.categorize("cats", {}, False, raw, None)[0] == "unknown"
    assert cat.categorize(None, {"camera_make": "Nikon"}, True, raw, None) == ("photo", "camera exif")
    assert cat.categorize(None, {}, True, raw, None) == ("render", "depth map")
    assert cat.categorize(None, {}, False, raw, None)[0] == "unknown"
    # two visually different kinds: smooth colour fields ("painting") vs black line drawings on white ("technical")
    def painting(i):
        return picture(1000 + i)

    def technical(i):
        im = Image.new("RGB", (64, 48), "white")
        from PIL import ImageDraw
        d = ImageDraw.Draw(im)
        rng = np.random.default_rng(i)
        for _ in range(8):
            x0, y0, x1, y1 = rng.integers(0, 48, 4).tolist()
            d.line((x0, y0, x1, y1), fill="black", width=1)
        return im
    feats = lambda ims: np.stack([dejavu.raw_descriptor(dejavu.small_rgb(im)) for im in ims])  # noqa: E731
    x = np.concatenate([feats([painting(i) for i in range(30)]), feats([technical(i) for i in range(30)])])
    clf = cat.train(x, ["painting"] * 30 + ["technical"] * 30)
    test = [(painting(i), "painting") for i in range(50, 58)] + [(technical(i), "technical") for i in range(50, 58)]
    right = sum(cat.categorize(None, {}, False, feats([im])[0], clf)[0] == y for im, y in test)
    assert right >= 15
    with pytest.raises(ValueError, match="two categories"):
        cat.train(x[:3], ["painting"] * 3)
