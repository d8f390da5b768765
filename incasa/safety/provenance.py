"""C2PA content credentials: sign every image incasa writes, verify them honestly, strip them on request.

A C2PA manifest is a signed statement embedded in the file (a `caBX` chunk in PNG, APP11 segments in JPEG, a
`C2PA` chunk in WebP) that says who made the image and how, bound to the pixels by a hash. We write, with
c2pa-python (the Content Authenticity Initiative's binding of c2pa-rs):

- a `c2pa.actions` assertion with one `c2pa.created` action, digitalSourceType `trainedAlgorithmicMedia`
  (IPTC's term for "made by a generative model"), the model name and version as the softwareAgent;
- an `org.incasa.generation` assertion with the model, its version and the generation parameters;
- for edits (img2img, inpainting) the input image as an ingredient with relationship `inputTo`, linked from
  the created action — the C2PA 2.x way to say "this input went into a generative creation".

Signing is offline: ES256 with a local certificate chain and no timestamp authority. `create_dev_keys` (CLI:
`incasa keys init`) makes a development chain with the `cryptography` package: an EC P-256 CA and an
end-entity certificate with keyUsage digitalSignature and extendedKeyUsage emailProtection, the key in PKCS#8,
the chain PEM end-entity first — what c2pa-rs requires. Such a chain is not on any trust list, so `verify`
reports `trust: "untrusted"` even though the signature is valid; only a certificate from a CA on the C2PA
trust list makes it "trusted". Bring your own by putting `chain.pem` and `signer.key.pem` in the keys folder.

`strip` removes the manifest by dropping exactly those container chunks (pixels and other metadata, such as
the PNG `parameters` text, stay byte-identical). Removal is what the seed system's endpoint offered; the CLI
logs each one. The invisible watermark (`watermark.py`) is the layer that survives stripping.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import struct
from pathlib import Path

DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
MIME = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "webp": "image/webp"}
MAGIC = {"image/png": (b"\x89PNG\r\n\x1a\n",), "image/jpeg": (b"\xff\xd8\xff",), "image/webp": (b"RIFF",)}
MAX_BYTES = 200 * 1024 * 1024  # refuse files above 200 MB before parsing them
MAX_PIXELS = 100_000_000  # and images above 100 megapixels
KEY_FILE = "signer.key.pem"
CHAIN_FILE = "chain.pem"
CA_FILE = "ca.pem"
GENERATION_LABEL = "org.incasa.generation"


def default_keys_dir() -> Path:
    """~/.config/incasa/keys — the CLI may point elsewhere (--keys-dir or INCASA_KEYS_DIR)."""
    return Path.home() / ".config" / "incasa" / "keys"


# --- keys ----------------------------------------------------------------------------------------------------


def _write_private(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def create_dev_keys(
    keys_dir: str | Path, *, overwrite: bool = False, organization: str = "incasa local development"
) -> Path:
    """Create a development signing chain (EC P-256 CA + end-entity) in `keys_dir`; returns the folder.

    The CA's private key is not kept: the chain can sign, but no further certificates can be issued from it.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = Path(keys_dir)
    if (folder / KEY_FILE).exists() and not overwrite:
        raise ValueError(f"signing keys already exist in {folder}; pass overwrite to replace them")
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def name(common_name: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            ]
        )

    def usage(**flags: bool) -> x509.KeyUsage:
        names = (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        )
        return x509.KeyUsage(**{n: flags.get(n, False) for n in names})

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("incasa dev root CA"))
        .issuer_name(name("incasa dev root CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("incasa dev signer"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=730))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write_private(folder / KEY_FILE, key_pem, 0o600)
    _write_private(folder / CHAIN_FILE, cert.public_bytes(pem) + ca.public_bytes(pem), 0o644)
    _write_private(folder / CA_FILE, ca.public_bytes(pem), 0o644)
    return folder


def ensure_dev_keys(keys_dir: str | Path | None = None) -> Path:
    """The keys folder, with a development chain created on first use if it holds none."""
    folder = Path(keys_dir) if keys_dir is not None else default_keys_dir()
    if not (folder / KEY_FILE).exists():
        create_dev_keys(folder)
    return folder


def _read_keys(keys_dir: str | Path | None) -> tuple[bytes, bytes]:
    folder = Path(keys_dir) if keys_dir is not None else default_keys_dir()
    chain, key = folder / CHAIN_FILE, folder / KEY_FILE
    if not chain.exists() or not key.exists():
        raise ValueError(
            f"no signing keys in {folder} ({CHAIN_FILE}, {KEY_FILE}); run `incasa keys init` "
            "to create a local development chain, or put your own certificate chain and PKCS#8 key there"
        )
    return chain.read_bytes(), key.read_bytes()


def key_id(keys_dir: str | Path | None = None) -> str:
    """A short fingerprint of the signing certificate's public key (16 hex digits): goes into the watermark."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    chain, _ = _read_keys(keys_dir)
    cert = x509.load_pem_x509_certificates(chain)[0]
    der = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:16]


# --- input checks --------------------------------------------------------------------------------------------


def mime_type(fmt: str) -> str:
    key = fmt.lower().lstrip(".").removeprefix("image/")
    if key not in MIME:
        raise ValueError(f"unsupported image format {fmt!r}; use png, jpeg or webp")
    return MIME[key]


def check_image_bytes(data: bytes, fmt: str, *, decode: bool = True) -> str:
    """Validate that `data` is a reasonably sized image of format `fmt` (and, if `decode`, complete: every
    pixel decodes); returns its MIME type."""
    mime = mime_type(fmt)
    if not isinstance(data, (bytes, bytearray)) or len(data) == 0:
        raise ValueError("image data is empty")
    if len(data) > MAX_BYTES:
        raise ValueError(f"image is {len(data) / 2**20:.0f} MB; the limit is {MAX_BYTES // 2**20} MB")
    if not data.startswith(MAGIC[mime]) or (mime == "image/webp" and data[8:12] != b"WEBP"):
        raise ValueError(f"data is not a {mime} file (wrong signature bytes)")
    if not decode:
        return mime
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_PIXELS:
                raise ValueError(
                    f"image is {img.width}x{img.height}; the limit is {MAX_PIXELS // 1_000_000} megapixels"
                )
            img.load()
    except (OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise ValueError(f"{mime} data is truncated or corrupt: {e}") from None
    return mime


# --- sign / verify -------------------------------------------------------------------------------------------


def _manifest(title: str, model: str, model_version: str, parameters: dict, with_ingredient: bool) -> dict:
    from incasa import __version__ as incasa_version

    created = {
        "action": "c2pa.created",
        "digitalSourceType": DIGITAL_SOURCE_TYPE,
        "softwareAgent": {"name": model, "version": model_version},
    }
    if with_ingredient:
        created["parameters"] = {"ingredientIds": ["incasa-input"]}
    return {
        "claim_generator_info": [{"name": "incasa", "version": incasa_version}],
        "title": title,
        "assertions": [
            {"label": "c2pa.actions", "data": {"actions": [created]}},
            {
                "label": GENERATION_LABEL,
                "data": {"model": model, "model_version": model_version, "parameters": parameters},
            },
        ],
    }


def sign_image(
    data: bytes,
    fmt: str,
    *,
    title: str,
    model: str,
    model_version: str,
    parameters: dict,
    ingredient: bytes | None = None,
    ingredient_fmt: str | None = None,
    keys_dir: str | Path | None = None,
    thumbnail: bool = False,
) -> bytes:
    """Return `data` (png/jpeg/webp bytes) with a signed C2PA manifest embedded; PNG text chunks are kept.

    `ingredient`: the input image of an edit (img2img, inpainting), recorded with relationship "inputTo";
    its format is sniffed unless `ingredient_fmt` is given. `thumbnail`: embed c2pa-rs's preview thumbnails
    (off by default: they cost ~100 ms and can double the file of a noisy image). Raises ValueError for bad
    input or missing keys.
    """
    import c2pa

    mime = check_image_bytes(data, fmt)
    try:
        json.dumps(parameters)
    except TypeError as e:
        raise ValueError(f"parameters must be JSON-serialisable: {e}") from None
    chain, key = _read_keys(keys_dir)
    if ingredient is not None:
        ingredient_mime = check_image_bytes(ingredient, ingredient_fmt or sniff_format(ingredient))
    try:
        signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, chain, key, None))
    except c2pa.C2paError as e:
        raise ValueError(f"cannot sign with the keys in {keys_dir or default_keys_dir()}: {e}") from None
    manifest = _manifest(title, model, model_version, parameters, ingredient is not None)
    out = io.BytesIO()
    with (
        signer,
        c2pa.Context.from_dict({"builder": {"thumbnail": {"enabled": thumbnail}}}) as context,
        c2pa.Builder(manifest, context=context) as builder,
    ):
        if ingredient is not None:
            ingredient_json = {"title": "input", "relationship": "inputTo", "label": "incasa-input"}
            builder.add_ingredient(ingredient_json, ingredient_mime, io.BytesIO(ingredient))
        builder.sign(signer, mime, io.BytesIO(data), out)
    return out.getvalue()


def sniff_format(data: bytes) -> str:
    for mime, magics in MAGIC.items():
        if data.startswith(magics) and (mime != "image/webp" or data[8:12] == b"WEBP"):
            return mime.split("/")[1]
    raise ValueError("not a PNG, JPEG or WebP file")


def verify(data: bytes, fmt: str) -> dict:
    """Read and validate the C2PA manifest. Always returns a dict; never raises for a missing manifest.

    state: "valid" (signature and hashes check out), "invalid" (something failed: tampering, bad signature)
    or "absent" (no manifest). trust: "trusted" (signer on a configured trust list), "untrusted" (valid but
    unknown signer — e.g. the development chain) or "n/a".
    """
    import c2pa

    mime = check_image_bytes(data, fmt, decode=False)  # a tampered file must still reach the validator
    try:
        reader = c2pa.Reader.try_create(mime, io.BytesIO(data))
    except c2pa.C2paError as e:
        return {"state": "invalid", "trust": "n/a", "failures": [str(e)], "actions": []}
    if reader is None:
        return {"state": "absent", "trust": "n/a", "failures": [], "actions": []}
    with reader:
        raw_state = reader.get_validation_state() or ""
        results = (reader.get_validation_results() or {}).get("activeManifest", {})
        manifest = reader.get_active_manifest() or {}
    failures = [r["code"] for r in results.get("failure", [])]
    untrusted = "signingCredential.untrusted" in failures
    serious = [f for f in failures if f != "signingCredential.untrusted"]
    state = "invalid" if raw_state == "Invalid" or serious else "valid"
    trust = "trusted" if raw_state == "Trusted" else ("untrusted" if untrusted else "n/a")
    actions, generation = [], {}
    for assertion in manifest.get("assertions", []):
        if assertion["label"].startswith("c2pa.actions"):
            actions.extend(assertion["data"].get("actions", []))
        elif assertion["label"] == GENERATION_LABEL:
            generation = assertion["data"]
    signature = manifest.get("signature_info", {})
    return {
        "state": state,
        "trust": trust,
        "validation_state": raw_state,
        "failures": failures,
        "title": manifest.get("title"),
        "claim_generator": manifest.get("claim_generator_info", [{}])[0].get("name"),
        "signer": {
            "common_name": signature.get("common_name"),
            "issuer": signature.get("issuer"),
            "alg": signature.get("alg"),
        },
        "actions": [a.get("action") for a in actions],
        "digital_source_type": next((a.get("digitalSourceType") for a in actions if a.get("digitalSourceType")), None),
        "model": generation.get("model"),
        "model_version": generation.get("model_version"),
        "parameters": generation.get("parameters"),
        "ingredients": [
            {"title": i.get("title"), "relationship": i.get("relationship")} for i in manifest.get("ingredients", [])
        ],
    }


# --- strip ---------------------------------------------------------------------------------------------------


def _strip_png(data: bytes) -> bytes:
    out, pos = [data[:8]], 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 12 + length
        if kind != b"caBX":
            out.append(data[pos:end])
        pos = end
    return b"".join(out)


def _strip_jpeg(data: bytes) -> bytes:
    out, pos = [data[:2]], 2
    while pos < len(data):
        if data[pos] != 0xFF:
            raise ValueError("corrupt JPEG: expected a marker")
        marker = data[pos + 1]
        if marker == 0xDA or 0xD0 <= marker <= 0xD9:  # start of scan (entropy-coded data follows) or no-length markers
            out.append(data[pos:])
            break
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        end = pos + 2 + length
        is_c2pa = marker == 0xEB and data[pos + 4 : pos + 6] == b"JP"  # APP11 carrying JUMBF
        if not is_c2pa:
            out.append(data[pos:end])
        pos = end
    return b"".join(out)


def _strip_webp(data: bytes) -> bytes:
    chunks, pos = [], 12
    while pos < len(data):
        kind, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        end = pos + 8 + size + (size & 1)
        if kind != b"C2PA":
            chunks.append(data[pos:end])
        pos = end
    body = b"WEBP" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def strip(data: bytes, fmt: str) -> bytes:
    """Remove every C2PA manifest from the file; everything else stays byte-identical."""
    mime = check_image_bytes(data, fmt)
    try:
        stripped = {"image/png": _strip_png, "image/jpeg": _strip_jpeg, "image/webp": _strip_webp}[mime](bytes(data))
    except struct.error:
        raise ValueError(f"{mime} container is truncated or corrupt") from None
    check_image_bytes(stripped, fmt)
    return stripped
