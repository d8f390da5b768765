import io

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from PIL import Image, PngImagePlugin

from incasa.safety import provenance
from incasa.safety.provenance import (
    CHAIN_FILE,
    KEY_FILE,
    create_dev_keys,
    ensure_dev_keys,
    key_id,
    sign_image,
    strip,
    verify,
)


def encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "png":
        meta = PngImagePlugin.PngInfo()
        meta.add_text("parameters", "a temple by a lake, steps 20, seed 1")
        img.save(buf, "PNG", pnginfo=meta)
    else:
        img.save(buf, fmt.upper(), quality=90)
    return buf.getvalue()


def sign(data: bytes, fmt: str, keys_dir, **kwargs) -> bytes:
    return sign_image(
        data,
        fmt,
        title=f"out.{fmt}",
        model="incasa-image-tiny",
        model_version="0.1",
        parameters={"prompt": "a temple", "steps": 20},
        keys_dir=keys_dir,
        **kwargs,
    )


def test_dev_chain_meets_c2pa_requirements(keys_dir):
    key = serialization.load_pem_private_key((keys_dir / KEY_FILE).read_bytes(), None)
    assert (keys_dir / KEY_FILE).read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    assert key.curve.name == "secp256r1"
    leaf, ca = x509.load_pem_x509_certificates((keys_dir / CHAIN_FILE).read_bytes())  # end entity first
    assert leaf.issuer == ca.subject
    assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.EMAIL_PROTECTION in eku
    assert (keys_dir / KEY_FILE).stat().st_mode & 0o077 == 0  # private key readable by the owner only
    assert len(key_id(keys_dir)) == 16
    with pytest.raises(ValueError, match="already exist"):
        create_dev_keys(keys_dir)


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_sign_verify_strip_verify_round_trip(photo, keys_dir, fmt):
    original = encode(photo, fmt)
    signed = sign(original, fmt, keys_dir)
    report = verify(signed, fmt)
    assert (report["state"], report["trust"]) == ("valid", "untrusted")  # a dev chain is honestly untrusted
    assert report["actions"] == ["c2pa.created"]
    assert report["digital_source_type"].endswith("/trainedAlgorithmicMedia")
    assert (report["model"], report["model_version"]) == ("incasa-image-tiny", "0.1")
    assert report["parameters"] == {"prompt": "a temple", "steps": 20}
    stripped = strip(signed, fmt)
    assert stripped == original  # exactly the manifest was removed
    assert verify(stripped, fmt)["state"] == "absent"
    assert strip(stripped, fmt) == stripped


def test_png_text_chunks_survive_signing(photo, keys_dir):
    signed = sign(encode(photo, "png"), "png", keys_dir)
    assert Image.open(io.BytesIO(signed)).text["parameters"] == "a temple by a lake, steps 20, seed 1"


def test_edit_records_the_input_as_ingredient(photo, keys_dir):
    signed = sign(encode(photo, "png"), "png", keys_dir, ingredient=encode(photo, "jpeg"))
    report = verify(signed, "png")
    assert report["state"] == "valid" and report["ingredients"] == [{"title": "input", "relationship": "inputTo"}]


def test_tampering_is_reported_invalid(photo, keys_dir):
    signed = sign(encode(photo, "png"), "png", keys_dir)
    at = signed.index(b"a temple by a lake")
    tampered = signed[:at] + b"a castle" + signed[at + 8 :]
    report = verify(tampered, "png")
    assert report["state"] == "invalid" and "assertion.dataHash.mismatch" in report["failures"]


def test_bad_inputs_give_clear_errors(photo, keys_dir, tmp_path, monkeypatch):
    png = encode(photo, "png")
    with pytest.raises(ValueError, match="wrong signature"):
        sign(b"definitely not an image", "png", keys_dir)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        sign(png[: len(png) // 2], "png", keys_dir)
    with pytest.raises(ValueError, match="wrong signature"):
        verify(png, "jpeg")
    with pytest.raises(ValueError, match="unsupported image format"):
        verify(png, "gif")
    with pytest.raises(ValueError, match="incasa keys init"):
        sign(png, "png", tmp_path / "no-keys")
    monkeypatch.setattr(provenance, "MAX_BYTES", 1000)
    with pytest.raises(ValueError, match="limit"):
        sign(png, "png", keys_dir)


def test_ensure_dev_keys_creates_once(tmp_path):
    folder = ensure_dev_keys(tmp_path / "k")
    first = (folder / KEY_FILE).read_bytes()
    assert ensure_dev_keys(folder) == folder and (folder / KEY_FILE).read_bytes() == first
