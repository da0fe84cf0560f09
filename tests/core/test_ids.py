from hostplane.core.ids import ID_LENGTH, is_id, new_id


def test_ids_are_unique_and_sort_in_creation_order() -> None:
    ids = [new_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)


def test_ids_are_short_opaque_strings() -> None:
    value = new_id()
    assert len(value) == ID_LENGTH
    assert is_id(value)
    assert not is_id("not-an-id")
    assert not is_id(value.upper())
