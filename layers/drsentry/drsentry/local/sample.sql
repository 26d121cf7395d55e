-- The sample database of `make demo` and the tests: a small booking application with
-- foreign keys, a function, row-level security and a few thousand rows.
-- :scale multiplies the row counts (1 gives about 9,000 rows).

create table organizations (
    id          bigserial primary key,
    name        text not null unique,
    plan        text not null default 'standard',
    created_at  timestamptz not null default now()
);

create table profiles (
    id              bigserial primary key,
    organization_id bigint not null references organizations (id) on delete cascade,
    email           text not null unique,
    full_name       text not null,
    phone           text,
    created_at      timestamptz not null default now()
);
create index profiles_organization_idx on profiles (organization_id);

-- Each organization sees only its own profiles.
alter table profiles enable row level security;
create policy profiles_same_organization on profiles
    using (organization_id = nullif(current_setting('app.organization_id', true), '')::bigint);

create table services (
    id               bigserial primary key,
    organization_id  bigint not null references organizations (id) on delete cascade,
    name             text not null,
    duration_minutes integer not null check (duration_minutes > 0),
    price_cents      integer not null check (price_cents >= 0)
);

create table appointments (
    id              bigserial primary key,
    organization_id bigint not null references organizations (id) on delete cascade,
    profile_id      bigint not null references profiles (id) on delete cascade,
    service_id      bigint not null references services (id),
    starts_at       timestamptz not null,
    status          text not null default 'booked' check (status in ('booked', 'done', 'cancelled')),
    notes           text,
    created_at      timestamptz not null default now()
);
create index appointments_profile_idx on appointments (profile_id);
create index appointments_starts_idx on appointments (starts_at);

create table sessions (
    id          uuid primary key default gen_random_uuid(),
    profile_id  bigint not null references profiles (id) on delete cascade,
    token       text not null,
    expires_at  timestamptz not null
);

-- Books a slot; the advisory lock serialises bookings of one profile.
create function book_appointment_with_lock(p_profile_id bigint, p_service_id bigint, p_starts_at timestamptz)
returns bigint
language plpgsql
as $$
declare
    v_organization_id bigint;
    v_appointment_id  bigint;
begin
    perform pg_advisory_xact_lock(p_profile_id);
    select organization_id into strict v_organization_id from profiles where id = p_profile_id;
    if exists (select 1 from appointments
               where profile_id = p_profile_id and starts_at = p_starts_at and status = 'booked') then
        raise exception 'profile % already booked at %', p_profile_id, p_starts_at;
    end if;
    insert into appointments (organization_id, profile_id, service_id, starts_at)
    values (v_organization_id, p_profile_id, p_service_id, p_starts_at)
    returning id into v_appointment_id;
    return v_appointment_id;
end;
$$;

insert into organizations (name, plan, created_at)
select 'Organization ' || g, (array['free', 'standard', 'enterprise'])[1 + g % 3], now() - (g || ' days')::interval
from generate_series(1, 20 * :scale) as g;

insert into profiles (organization_id, email, full_name, phone, created_at)
select 1 + g % (20 * :scale), 'person' || g || '@example.org', 'Person ' || g,
       '+1555' || lpad(g::text, 7, '0'), now() - ((g % 400) || ' days')::interval
from generate_series(1, 2000 * :scale) as g;

insert into services (organization_id, name, duration_minutes, price_cents)
select 1 + g % (20 * :scale), 'Service ' || g, 15 * (1 + g % 6), 2500 + 500 * (g % 10)
from generate_series(1, 60 * :scale) as g;

insert into appointments (organization_id, profile_id, service_id, starts_at, status, notes, created_at)
select p.organization_id, p.id, 1 + g % (60 * :scale),
       now() + ((g % 720) - 360 || ' hours')::interval,
       (array['booked', 'done', 'cancelled'])[1 + g % 3],
       md5(g::text),
       now() - ((g % 96) || ' hours')::interval
from generate_series(1, 6000 * :scale) as g
join profiles p on p.id = 1 + g % (2000 * :scale);

insert into sessions (profile_id, token, expires_at)
select 1 + g % (2000 * :scale), md5('token' || g), now() + interval '1 day'
from generate_series(1, 1000 * :scale) as g;

analyze;
