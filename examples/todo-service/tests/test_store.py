from todo_service.store import TodoStore


def test_add_and_get() -> None:
    store = TodoStore()
    todo = store.add("write the design")
    assert todo.id == 1
    assert store.get(todo.id) == todo
    assert not todo.done


def test_list_filters_by_done() -> None:
    store = TodoStore()
    store.add("a")
    store.add("b", done=True)
    assert [t.title for t in store.list()] == ["a", "b"]
    assert [t.title for t in store.list(done=True)] == ["b"]
