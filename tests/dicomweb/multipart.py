"""A multipart/related STOW-RS body, as the tests send it."""


def multipart_body(*parts: bytes, boundary: str, content_type: str = "application/dicom") -> bytes:
    return b"".join(
        f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode() + p + b"\r\n"
        for p in parts
    ) + f"--{boundary}--\r\n".encode()  # fmt: skip
