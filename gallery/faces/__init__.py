"""The face stages (decode, detect, align, embed) and the one pipeline that composes them."""
