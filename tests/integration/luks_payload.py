#!/usr/bin/python3
"""Independent reader and writer of a LUKS payload, for checking volgate's data path.

    luks_payload.py decrypt IMAGE KEYFILE OUT   # the decrypted payload of IMAGE into OUT
    luks_payload.py encrypt IMAGE KEYFILE IN    # IN, encrypted, into IMAGE's payload

The volume key comes from `cryptsetup luksDump --dump-volume-key`, the layout (data offset,
sector size, iv_tweak) from cryptsetup's own dump, and the cipher from python3-cryptography:
nothing here shares code with volgate. Each encryption sector is one AES-XTS data unit whose
tweak is its offset in 512-byte sectors from the start of the data segment, plus iv_tweak.
"""
import json
import re
import subprocess
import sys

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def cryptsetup(*args):
    return subprocess.run(["cryptsetup", *args], capture_output=True, text=True, check=True).stdout


def layout(image, keyfile):
    dump = cryptsetup("luksDump", "--dump-volume-key", "--batch-mode", "--key-file", keyfile, image)
    key_text = dump.split("MK dump:")[1]
    key_text = key_text.split("\n\n")[0] if "\n\n" in key_text else key_text
    key = bytes.fromhex("".join(re.findall(r"\b[0-9a-f]{2}\b", key_text)))
    header = cryptsetup("luksDump", image)
    if re.search(r"^Version:\s*1", header, re.M):
        offset = int(re.search(r"^Payload offset:\s*(\d+)", header, re.M).group(1)) * 512
        return key, offset, 512, 0, None
    meta = json.loads(cryptsetup("luksDump", "--dump-json-metadata", image))
    (segment,) = meta["segments"].values()
    size = None if segment["size"] == "dynamic" else int(segment["size"])
    return key, int(segment["offset"]), int(segment["sector_size"]), int(segment["iv_tweak"]), size


def transform(encrypting, key, sector_size, iv_tweak, first_byte, data):
    out = bytearray(len(data))
    for pos in range(0, len(data), sector_size):
        tweak = ((first_byte + pos) // 512 + iv_tweak).to_bytes(16, "little")
        c = Cipher(algorithms.AES(key), modes.XTS(tweak))
        op = c.encryptor() if encrypting else c.decryptor()
        out[pos:pos + sector_size] = op.update(data[pos:pos + sector_size]) + op.finalize()
    return bytes(out)


def main():
    action, image, keyfile, other = sys.argv[1:5]
    key, offset, sector_size, iv_tweak, size = layout(image, keyfile)
    chunk = 1 << 20
    with open(image, "r+b") as img:
        img.seek(0, 2)
        payload = (img.seek(0, 2) - offset) if size is None else size
        if action == "decrypt":
            with open(other, "wb") as out:
                for pos in range(0, payload, chunk):
                    img.seek(offset + pos)
                    data = img.read(min(chunk, payload - pos))
                    out.write(transform(False, key, sector_size, iv_tweak, pos, data))
        elif action == "encrypt":
            with open(other, "rb") as src:
                pos = 0
                while True:
                    data = src.read(chunk)
                    if not data:
                        break
                    assert len(data) % sector_size == 0 and pos + len(data) <= payload
                    img.seek(offset + pos)
                    img.write(transform(True, key, sector_size, iv_tweak, pos, data))
                    pos += len(data)
        else:
            sys.exit("unknown action " + action)


if __name__ == "__main__":
    main()
