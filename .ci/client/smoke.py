"""Drives the service through a client generated from its own /openapi.json.

Creates an employee, submits three tasks, lists them two at a time by cursor, and reads
one back until it ends: the generated types must parse every answer.
Usage: smoke.py BASE_URL API_KEY  (the generated package `client` on sys.path)
"""

import sys
import time

from client import AuthenticatedClient
from client.api.employees import employees_create
from client.api.tasks import tasks_create, tasks_get, tasks_list
from client.models import CreateEmployee, CreateTask, EmployeeView, PageTaskView, TaskView


def main() -> None:
    base_url, key = sys.argv[1], sys.argv[2]
    api = AuthenticatedClient(base_url=base_url, token=key, prefix="", auth_header_name="X-API-Key",
                              raise_on_unexpected_status=True)
    employee = employees_create.sync(client=api, body=CreateEmployee(name="generated-client", role="Echoes its input"))
    assert isinstance(employee, EmployeeView), employee
    submitted = []
    for n in range(3):
        task = tasks_create.sync(client=api, body=CreateTask(employee=employee.name, input_=f"job {n}"))
        assert isinstance(task, TaskView), task
        submitted.append(task.id)

    seen, cursor, pages = [], None, 0
    while True:
        page = tasks_list.sync(client=api, limit=2, **({"cursor": cursor} if cursor else {}))
        assert isinstance(page, PageTaskView), page
        seen.extend(t.id for t in page.data)
        pages += 1
        cursor = page.next_cursor if isinstance(page.next_cursor, str) else None
        if not cursor:
            break
    assert sorted(seen) == sorted(submitted), (seen, submitted)
    assert pages == 2, pages

    deadline = time.monotonic() + 30
    while True:
        task = tasks_get.sync(client=api, id=submitted[0])
        assert isinstance(task, TaskView), task
        if str(task.status) in ("succeeded", "failed", "cancelled"):
            break
        assert time.monotonic() < deadline, f"task still {task.status}"
        time.sleep(0.1)
    assert str(task.status) == "succeeded", task
    print(f"generated client: employee {employee.id}, {len(seen)} tasks over {pages} pages, "
          f"task {task.id} {task.status}")


if __name__ == "__main__":
    main()
