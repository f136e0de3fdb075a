//! Where the image goes: a docker-archive file or a stream.
