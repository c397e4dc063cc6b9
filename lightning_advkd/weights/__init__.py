"""Reference weights shipped with the package (package data); see ``README.md`` beside this file."""
