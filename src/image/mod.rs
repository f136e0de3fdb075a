//! The image config, history and docker `manifest.json`, serialised canonically.
