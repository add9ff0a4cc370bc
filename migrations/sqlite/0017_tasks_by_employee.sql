-- An employee's tasks, newest first: the task list filtered by employee and the recent
-- tasks on an employee's page read a page of it without visiting the tenant's others.
CREATE INDEX tasks_tenant_employee_id ON tasks (tenant_id, employee_id, id DESC);
