/**
 * Free-form per-user settings ("ui.theme" = "dark"): at most 100 keys per
 * user; SetPreferences is all or nothing.
 */
import { v7 as uuidv7 } from "uuid";
import type {
  DeletePreferencesRequest,
  GetPreferencesRequest,
  GetPreferencesResponse,
  SetPreferencesRequest,
  SetPreferencesResponse,
} from "../../gen/ecommerce/user/v1/user_pb.js";
import type { EntityManager } from "../../kit/db.ts";
import { Code, domainError } from "../../kit/errors.ts";
import { sqlOf } from "../../kit/sql.ts";
import { PreferenceEntity } from "./entities.ts";
import { type Nullable, type PreferenceFields, preferenceColumns, preferenceMessage } from "./mapping.ts";
import { findProfile, profileNotFound } from "./profiles.ts";

export const maxPreferenceKeys = 100;

/** Code-point order, not the database collation's (which may ignore "." and "_"). */
const byKey = (a: { key: string }, b: { key: string }) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);

/** GetPreferences in one statement: the profile (NOT_FOUND without one) left-joined with the asked keys, mapped straight to messages. */
export async function getPreferences(em: EntityManager, userId: string, req: GetPreferencesRequest): Promise<Omit<GetPreferencesResponse, "$typeName">> {
  const some = req.keys.length > 0;
  const rows = await sqlOf(em).all<Nullable<PreferenceFields>>(
    `select ${preferenceColumns} from user_profiles p
       left join user_preferences pr on pr.user_id = p.user_id${some ? " and pr.key = any($2::text[])" : ""}
      where p.user_id = $1`,
    some ? [userId, req.keys] : [userId],
  );
  if (rows.length === 0) throw profileNotFound(userId);
  return { preferences: rows.filter((r): r is PreferenceFields => r.key !== null).sort(byKey).map(preferenceMessage) };
}

export async function setPreferences(em: EntityManager, userId: string, req: SetPreferencesRequest): Promise<Omit<SetPreferencesResponse, "$typeName">> {
  return em.transactional(async (tx) => {
    await findProfile(tx, userId, true);
    const existing = await tx.find(PreferenceEntity, { userId });
    const rowsByKey = new Map(existing.map((p) => [p.key, p]));
    const added = Object.keys(req.preferences).filter((k) => !rowsByKey.has(k));
    if (existing.length + added.length > maxPreferenceKeys) {
      throw domainError(
        Code.ResourceExhausted,
        `a user has at most ${maxPreferenceKeys} preference keys: ${existing.length} are set and ${added.length} would be added`,
        { reason: "PREFERENCE_LIMIT_REACHED" },
      );
    }
    const now = new Date();
    for (const [key, value] of Object.entries(req.preferences)) {
      const row = rowsByKey.get(key);
      if (!row) {
        rowsByKey.set(key, tx.create(PreferenceEntity, { id: uuidv7(), userId, key, value, createdAt: now, updatedAt: now }));
      } else if (row.value !== value) {
        // updated_at tells when the value last changed, so an unchanged value keeps it.
        row.value = value;
        row.updatedAt = now;
      }
    }
    await tx.flush();
    return { preferences: [...rowsByKey.values()].sort(byKey).map(preferenceMessage) };
  });
}

export async function deletePreferences(em: EntityManager, userId: string, req: DeletePreferencesRequest): Promise<void> {
  await em.transactional(async (tx) => {
    await findProfile(tx, userId, true);
    await tx.nativeDelete(PreferenceEntity, { userId, key: { $in: req.keys } });
  });
}
