-- The employee an AI call was made for (NULL for gateway calls and older rows), so usage
-- can be reported per employee. No foreign key: usage history outlives a deleted employee.
ALTER TABLE ai_calls ADD COLUMN employee_id TEXT;
