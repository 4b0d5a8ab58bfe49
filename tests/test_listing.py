"""store/listing.py on its own: the name ranges the catalogs' keyset pages read."""

from store.listing import prefix_upper_bound


def test_a_prefix_is_a_range_of_the_name_index():
    assert prefix_upper_bound("") is None
    assert prefix_upper_bound("ab") == "ac"
    assert prefix_upper_bound("a\U0010ffff") == "b"
    assert prefix_upper_bound("\U0010ffff\U0010ffff") is None
    assert prefix_upper_bound("\ud7ff") == "\ue000", "surrogates are stepped over"
